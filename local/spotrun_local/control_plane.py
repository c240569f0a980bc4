"""The control plane's side of the local runtime: its generations, the handlers' invocations, the schedules.

The control plane (the `ControlPlane` with its clients and caches, the SQS pumps feeding the
handlers as Lambda would, and the scheduled functions such as the reaper) is one *generation* that
can be dropped abruptly and rebuilt from the environment while moto and the instances stay up
(`crash_control_plane` / `start_control_plane`, used by the chaos soak). Which function consumes
which queue, runs on a schedule or answers the API comes from `spotrun.resources`
(`spotrun_local.wiring`).

`ControlPlaneHost` is a part of `LocalRuntime` (spotrun_local.runtime): it uses the runtime's
`env`, `options`, `market`, `counters` and `_loop`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from spotrun import resources
from spotrun.aws import control_plane_from_env
from spotrun.control import ControlPlane
from spotrun_local import wiring
from spotrun_local.endpoint import ACCOUNT, REGION, LocalCompute
from spotrun_local.pump import SqsPump

log = logging.getLogger("spotrun.local")


class ControlPlaneStopped(BaseException):
    """Raised at the next AWS call of a control plane generation that was dropped: like a process that
    died, it unwinds everything (a BaseException, so no `except Exception` in the handlers resumes work)."""


@dataclass
class Generation:
    """One life of the control plane: its ControlPlane (clients, caches), pumps and reaper."""

    number: int
    stop: threading.Event = field(default_factory=threading.Event)
    crashed: bool = False
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    cp: Any = None

    def lock(self, name: str) -> threading.Lock:
        return self.locks.setdefault(name, threading.Lock())


class ControlPlaneHost:
    """Builds, runs and drops control plane generations (a mixin of LocalRuntime)."""

    env: dict[str, str]
    options: Any
    market: Any
    counters: Any
    generation: Generation | None
    _generations: int
    _locks: dict[str, threading.Lock]
    session_hooks: list[Callable[[Any, Generation], None]]
    pump_wrapper: Callable[[SqsPump, Generation], Any] | None
    _loop: Callable[..., None]

    def build_control_plane(self, session: Any) -> ControlPlane:
        """A control plane from the environment, as a cold Lambda container builds it, on local compute."""
        cp = control_plane_from_env(self.env, session=session)
        cp.settings = dataclasses.replace(cp.settings, cooldown_seconds=self.options.cooldown_seconds)
        cp.compute = LocalCompute(cp.compute.client, cp.settings.launch_template_id, cp.settings.subnets, self.market,
                                  placement_groups=cp.settings.placement_groups)
        cp.prices = self.market
        return cp

    def start_control_plane(self) -> Generation:
        """Start a fresh generation: new session, clients and caches, pumps and reaper."""
        self._generations += 1
        generation = Generation(self._generations)
        session = boto3.session.Session(region_name=REGION)

        def cut(**_: Any) -> None:
            if generation.crashed:
                raise ControlPlaneStopped(f"control plane generation {generation.number} was dropped")

        session.events.register("before-call", cut)
        session.events.register("before-send", cut)
        for hook in self.session_hooks:
            hook(session, generation)
        generation.cp = self.build_control_plane(session)
        self.cp = generation.cp
        self.generation = generation
        sqs = session.client("sqs")
        queues = json.loads(self.env["SPOTRUN_QUEUE_URLS"])
        for consumer in wiring.consumers():
            key = consumer.queue.key
            pump: Any = SqsPump(sqs, queues[key], self._guarded(consumer.handler, key, generation), key,
                                batch_size=consumer.queue.batch_size,
                                visibility_timeout=self.options.visibility_timeout_seconds,
                                context=wiring.lambda_context(consumer.function))
            if self.pump_wrapper is not None:
                pump = self.pump_wrapper(pump, generation)
            self._loop(f"pump-{key}-{generation.number}", lambda p=pump: p.poll_once(wait_seconds=1), 0.0, generation)
        for scheduled in wiring.schedules():
            self._loop(f"{scheduled.function.key}-{generation.number}",
                       lambda s=scheduled: self._run_scheduled(s, generation),
                       self.options.reaper_seconds * scheduled.minutes, generation)
        self.counters.control_plane_starts += 1
        return generation

    def crash_control_plane(self) -> None:
        """Drop the control plane abruptly: its threads stop, in-flight invocations die at their next AWS
        call. moto (AWS) and the instances stay up; `start_control_plane` builds the next generation."""
        generation = self.generation
        if generation is None:
            return
        generation.crashed = True
        generation.stop.set()
        self.counters.control_plane_crashes += 1
        self.counters.events.append({"kind": "control_plane_crash", "generation": generation.number,
                                     "at": time.time()})

    def _lock(self, name: str) -> threading.Lock:
        return self._locks.setdefault(name, threading.Lock())

    def api_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self._lock("api"):
            return wiring.handler("api")(event, context, control=self.cp)

    def console_handler(self, event: dict[str, Any], context: Any) -> Any:
        """The console function (the one dashboards invoke), for the local console page."""
        return wiring.handler(wiring.invoked_by(resources.DASHBOARD).key)(event, context, control=self.cp)

    def workers_handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """The worker routes (the function URL runs one invocation per request, concurrently). An invocation
        of a control plane that crashed meanwhile dies like the others: the URL answers 502."""
        try:
            return wiring.handler("worker-api")(event, context, control=self.cp)
        except ControlPlaneStopped as stopped:
            raise RuntimeError(str(stopped)) from None

    def _guarded(self, handler: Callable[..., Any], name: str,
                 generation: Generation) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        lock = generation.lock(name)

        def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
            with lock:
                try:
                    return handler(event, context, control=generation.cp)
                except Exception:
                    # A crashed invocation: Lambda would retry the whole batch after the visibility timeout.
                    self.counters.handler_errors += 1
                    log.exception("%s handler failed", name)
                    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]}
        return invoke

    def _run_scheduled(self, scheduled: wiring.Scheduled, generation: Generation) -> None:
        with generation.lock(scheduled.function.key):
            scheduled.handler(wiring.scheduled_event(scheduled.function, REGION, ACCOUNT),
                              wiring.lambda_context(scheduled.function), control=generation.cp)

