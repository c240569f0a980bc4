"""At-least-once delivery at its worst: an SQS pump wrapper that delivers messages twice, late and
out of order. (Lost heartbeats are the agents' own failed beat writes: `chaos.faults`, drop_beat.)

For each message received for the first time it may send a copy of the body back to the queue
with a random delay (so the handler sees it twice, the copy late); any message may be held back
on its first receive (its visibility pushed out, handled on a later receive, after newer ones); the batch the handler
gets is shuffled.
Every receive is recorded per message id, so a message that ends in a dead-letter queue can be
explained (which faults, crashes or hold-backs used up its receives).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from spotrun_local.chaos.faults import FaultLog
from spotrun_local.pump import SqsPump

COPY_ATTRIBUTE = "spotrun-chaos-copy"


@dataclass
class QueueRates:
    duplicate: float = 0.5  # a first delivery is also sent again, delayed
    max_delay_seconds: int = 8
    hold: float = 0.1  # a delivery is put back for later instead of handled now
    # A lone message is sometimes kept a moment for whatever arrives next, as an event source's batching
    # window does: since the agents write their own heartbeats, the queues left are sparse, and batches of
    # several messages (whose order the chaos then changes) would otherwise be rare in a short soak.
    gather: float = 0.3
    gather_seconds: float = 0.5
    enabled: bool = True


@dataclass
class Receipts:
    """What happened at each receive of each message (by message id), across pumps and generations."""

    history: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    bodies: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, message_id: str, what: str, body: str | None = None) -> None:
        with self._lock:
            self.history[message_id].append(what)
            if body is not None and message_id not in self.bodies:
                self.bodies[message_id] = body


class ChaosPump:
    """Wraps an `SqsPump` (same queue, handler and client); `poll_once` is the only entry point."""

    def __init__(self, pump: SqsPump, rng: random.Random, log: FaultLog, rates: QueueRates, receipts: Receipts,
                 generation: int = 0):
        self.pump = pump
        self.rng = rng
        self.log = log
        self.rates = rates
        self.receipts = receipts
        self.generation = generation

    def _roll(self, probability: float) -> bool:
        return self.rates.enabled and probability > 0 and self.rng.random() < probability

    def poll_once(self, wait_seconds: int = 0) -> int:
        pump, sqs = self.pump, self.pump.sqs
        messages = pump.receive(wait_seconds)
        if not messages:
            return 0
        if len(messages) == 1 and self._roll(self.rates.gather):
            time.sleep(self.rates.gather_seconds)
            messages += pump.receive(0)
        name = pump.name
        kept = []
        for message in messages:
            mid = message["MessageId"]
            is_copy = COPY_ATTRIBUTE in message.get("MessageAttributes", {})
            first = message.get("Attributes", {}).get("ApproximateReceiveCount", "1") == "1"
            self.receipts.add(mid, "received", message["Body"])
            if first and not is_copy and self._roll(self.rates.duplicate):
                delay = self.rng.randint(0, self.rates.max_delay_seconds)
                attributes = {k: {"DataType": v.get("DataType", "String"), "StringValue": v.get("StringValue", "")}
                              for k, v in message.get("MessageAttributes", {}).items() if "StringValue" in v}
                attributes[COPY_ATTRIBUTE] = {"DataType": "String", "StringValue": mid}
                sqs.send_message(QueueUrl=pump.queue_url, MessageBody=message["Body"], DelaySeconds=delay,
                                 MessageAttributes=attributes)
                self.log.add("duplicate_delivery", queue=name, delay=delay)
            # Late, not lost: SQS counts every receive against maxReceiveCount, so a message is held back on
            # its first receive only; holding it again would use up the receives that stand for real
            # failures and dead-letter it for lateness alone (seen in a long soak: held 4 times, failed once).
            if first and not is_copy and self._roll(self.rates.hold):
                delay = self.rng.randint(1, self.rates.max_delay_seconds)
                sqs.change_message_visibility(QueueUrl=pump.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                              VisibilityTimeout=delay)
                self.log.add("late_delivery", queue=name, delay=delay)
                self.receipts.add(mid, "held")
                continue
            kept.append(message)
        if not kept:
            return len(messages)
        if len(kept) > 1:
            order = list(kept)
            self.rng.shuffle(kept)
            if order == kept:  # a shuffle that kept the order (half the time for two) is no fault: reverse
                kept.reverse()
            self.log.add("out_of_order_batch", queue=name, size=len(kept))
        before = self.log.in_this_thread()
        try:
            done = pump.invoke(kept)
        except BaseException:
            for message in kept:
                self.receipts.add(message["MessageId"], f"cut (generation {self.generation} dropped)")
            raise
        faulted = self.log.in_this_thread() > before
        handled = {m["MessageId"] for m in done}
        for message in kept:
            if message["MessageId"] not in handled:
                self.receipts.add(message["MessageId"], "failed (injected fault)" if faulted else "failed")
        pump.delete(done)
        for message in done:
            self.receipts.add(message["MessageId"], "handled")
        return len(messages)
