import json, uuid
import pytest
from spotrun.handlers import finisher, heartbeat, interruption, scheduler
from tests.support import eventbridge_event

def sqs_event(bodies):
    return {"Records": [{"messageId": str(uuid.uuid4()), "receiptHandle": "r", "body": b, "attributes": {},
                         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"} for b in bodies]}

def sns(message):
    return json.dumps({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": message})

HB = {"job_id": "j-00000000000000000000", "index": 0, "attempt": 1, "instance_id": "i-0abc", "sent_at": "2026-11-23T12:00:00Z"}
REP = {**HB, "outcome": "completed", "program": {"exit_code": 0}}
cases = {
 "scheduler": (scheduler, [sns("not json"), sns(json.dumps([1])), sns(json.dumps({"type": "x"})), json.dumps({"Message": 5}),
               json.dumps(["Message"]), json.dumps("str"), sns(json.dumps({"type": "JobSubmitted", "job_id": "j-00000000000000000000"})),
               sns(json.dumps({"type": "JobSubmitted", "job_id": ""})), sns(json.dumps({"type": "JobSubmitted", "job_id": "x" * 5000})),
               sns(json.dumps({"type": "JobSubmitted", "job_id": "a#b"})), sns("null"), "", json.dumps({"type": "JobSubmitted", "job_id": "j-1"})]),
 "heartbeat": (heartbeat, [json.dumps(HB), json.dumps({**HB, "index": 10**40}), json.dumps({**HB, "attempt": 10**40}),
               json.dumps({**HB, "progress": float("nan")}), '{"job_id": "j", "index": 0, "attempt": 1, "instance_id": "i", "sent_at": "2026-11-23T12:00:00Z", "progress": NaN}',
               json.dumps({**HB, "sent_at": "9999-12-31T23:59:59Z"}), json.dumps({**HB, "sent_at": "2026-11-23T12:00:00"}),
               json.dumps({**HB, "memory_bytes": 10**40}), json.dumps({**HB, "cpu_percent": 1e308}), json.dumps({**HB, "checkpoint_seq": 10**40}), "[]", "null", "\x00"]),
 "finisher": (finisher, [json.dumps(REP), json.dumps({**REP, "index": 10**40}), json.dumps({**REP, "outputs": ["x"] * 3}),
              json.dumps({**REP, "program": {"exit_code": 10**40}}), json.dumps({**REP, "outcome": "nope"})]),
 "interruption": (interruption, [json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-unknown"})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": ""})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": 123})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": ["i-1"]})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": {"a": 1}})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": None})),
                  json.dumps(eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-" + "a" * 5000})),
                  json.dumps(eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-x", "state": ["terminated"]})),
                  json.dumps(eventbridge_event("EC2 Instance State-change Notification", {"instance-id": "i-x", "state": "terminated"})),
                  json.dumps({"source": "aws.health", "detail-type": "AWS Health Event", "detail": {"service": "EC2", "eventTypeCategory": "scheduledChange", "affectedEntities": [{"entityValue": "i-zz"}], "startTime": 5}}),
                  json.dumps({**eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-unknown"}), "time": 5}),
                  json.dumps({**eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-unknown"}), "time": "2026-11-23T12:00:00"}),
                  json.dumps({**eventbridge_event("EC2 Spot Instance Interruption Warning", {"instance-id": "i-unknown"}), "detail": "x"}),
                  "[1]", "5", "not json"]),
}

@pytest.mark.parametrize("name", list(cases))
def test_q(cp, context, name, capsys):
    module, bodies = cases[name]
    for b in bodies:
        try:
            out = module.handler(sqs_event([b]), context, control=cp)
            print(name, "FAIL" if out["batchItemFailures"] else "ok", repr(b)[:140])
        except Exception as e:
            print(name, "RAISE", type(e).__name__, str(e)[:200], repr(b)[:140])
    captured = capsys.readouterr()
    with capsys.disabled():
        print("\n".join(l for l in captured.out.splitlines() if l.startswith(name)))
