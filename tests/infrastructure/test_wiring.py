"""The deployed wiring is `spotrun.resources`, one to one.

The local runtime builds its queues, subscriptions, rules and handlers from the same module, so
these tests are what makes "it works locally" mean "it is wired the same way in AWS".
"""

from __future__ import annotations

import pytest
from template_query import StackTemplate, render

from spotrun import resources

pytestmark = pytest.mark.slow  # reads the synthesized stack


def test_every_queue_in_resources_is_one_queue_with_its_settings(query: StackTemplate) -> None:
    queues = query.queues()
    assert set(queues) == {q.key for q in resources.QUEUES}
    for definition in resources.QUEUES:
        props = query.props(queues[definition.key])
        assert props["VisibilityTimeout"] == definition.visibility_timeout_seconds, definition.key


def test_every_queue_redrives_to_its_own_dead_letter_queue_after_max_receive_count(query: StackTemplate) -> None:
    queues, dead_letters = query.queues(), query.dead_letter_queues()
    assert set(dead_letters) == set(queues)
    for definition in resources.QUEUES:
        redrive = query.props(queues[definition.key])["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == definition.max_receive_count, definition.key
        assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [dead_letters[definition.key], "Arn"]}
        assert "RedrivePolicy" not in query.props(dead_letters[definition.key])


def test_every_queue_is_consumed_by_its_function_with_partial_batch_failures(query: StackTemplate) -> None:
    queues, functions = query.queues(), query.functions()
    mappings = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in query.of_type("AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == set(queues.values()), "every queue has exactly one consumer, nothing else is consumed"
    for definition in resources.QUEUES:
        mapping = mappings[queues[definition.key]]
        assert mapping["FunctionName"] == {"Ref": functions[definition.consumer]}, definition.key
        assert mapping["BatchSize"] == definition.batch_size, definition.key
        assert mapping.get("MaximumBatchingWindowInSeconds", 0) == definition.max_batching_window_seconds
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], definition.key


def test_topics_are_the_ones_in_resources(query: StackTemplate) -> None:
    names = {render(t["Properties"]["DisplayName"]) for t in query.of_type("AWS::SNS::Topic").values()}
    assert names == {f"spotrun {name}" for name in resources.TOPICS}


def test_each_subscription_delivers_the_sns_envelope_filtered_like_resources(query: StackTemplate) -> None:
    topics = {
        t["Properties"]["DisplayName"].removeprefix("spotrun "): lid
        for lid, t in query.of_type("AWS::SNS::Topic").items()
    }
    queues = query.queues()
    sqs_subscriptions = [
        s["Properties"]
        for s in query.of_type("AWS::SNS::Subscription").values()
        if s["Properties"]["Protocol"] == "sqs"
    ]
    assert len(sqs_subscriptions) == len(resources.SUBSCRIPTIONS)
    for definition in resources.SUBSCRIPTIONS:
        matching = [
            s
            for s in sqs_subscriptions
            if s["TopicArn"] == {"Ref": topics[definition.topic]}
            and s["Endpoint"] == {"Fn::GetAtt": [queues[definition.queue], "Arn"]}
        ]
        assert len(matching) == 1, definition
        subscription = matching[0]
        assert subscription["FilterPolicy"] == definition.filter_policy()
        assert subscription.get("FilterPolicyScope", "MessageAttributes") == "MessageAttributes"
        assert subscription.get("RawMessageDelivery", False) is False, "handlers expect the SNS envelope"


def test_each_event_rule_has_the_exact_pattern_and_targets_its_queue(query: StackTemplate) -> None:
    queues = query.queues()
    pattern_rules = [
        r["Properties"] for r in query.of_type("AWS::Events::Rule").values() if "EventPattern" in r["Properties"]
    ]
    assert len(pattern_rules) == len(resources.RULES)
    for definition in resources.RULES:
        matching = [r for r in pattern_rules if r["EventPattern"] == definition.pattern]
        assert len(matching) == 1, f"rule {definition.key}: pattern not found exactly once"
        rule = matching[0]
        assert rule.get("State", "ENABLED") == "ENABLED"
        assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": [queues[definition.queue], "Arn"]}]


def test_every_function_in_resources_is_one_function_with_its_handler_timeout_memory(query: StackTemplate) -> None:
    functions = query.functions()
    assert set(functions) == {f.key for f in resources.FUNCTIONS}
    for definition in resources.FUNCTIONS:
        props = query.props(functions[definition.key])
        assert props["Handler"] == definition.handler
        assert props["Timeout"] == definition.timeout_seconds
        assert props["MemorySize"] == definition.memory_mb


def test_scheduled_functions_run_on_their_rate_and_only_they(query: StackTemplate) -> None:
    functions = query.functions()
    schedules = {
        r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]: r["Properties"]["ScheduleExpression"]
        for r in query.of_type("AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    }
    expected = {
        functions[f.key]: f"rate({f.schedule_minutes} minute{'s' if f.schedule_minutes != 1 else ''})"
        for f in resources.FUNCTIONS
        if f.schedule_minutes is not None
    }
    assert schedules == expected


def test_every_queue_stays_invisible_six_times_its_consumers_timeout(query: StackTemplate) -> None:
    """AWS's guidance for an SQS event source mapping: a visibility timeout of at least 6x the function's
    timeout (plus the batching window). At 1.2x, receives of a batch the poller retried while the function
    was throttled count toward maxReceiveCount: a message could reach the dead-letter queue unprocessed."""
    functions = {logical_id: key for key, logical_id in query.functions().items()}
    mappings = query.of_type("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == len(resources.QUEUES)
    for mapping in mappings.values():
        props = mapping["Properties"]
        queue = query.template["Resources"][props["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
        function = query.template["Resources"][props["FunctionName"]["Ref"]]["Properties"]
        window = props.get("MaximumBatchingWindowInSeconds", 0)
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"] + window, functions[props["FunctionName"]["Ref"]]


def test_a_scheduled_function_that_can_outlast_its_rate_never_overlaps_itself(query: StackTemplate) -> None:
    """The reaper runs every minute with a 240 s timeout: without a limit its sweeps overlapped."""
    functions = query.functions()
    configs = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
               for c in query.of_type("AWS::Lambda::EventInvokeConfig").values()}
    scheduled = [f for f in resources.FUNCTIONS if f.schedule_minutes is not None]
    assert scheduled
    for definition in scheduled:
        if definition.timeout_seconds <= 60 * definition.schedule_minutes:
            continue
        props = query.template["Resources"][functions[definition.key]]["Properties"]
        assert props["ReservedConcurrentExecutions"] == 1, definition.key
        config = configs[functions[definition.key]]  # a sweep that finds one running is dropped, not queued
        assert config["MaximumRetryAttempts"] == 0 and config["MaximumEventAgeInSeconds"] <= 60 * definition.schedule_minutes


def test_heartbeats_need_no_queue_nor_function_and_a_lost_beat_is_not_a_lost_worker(query: StackTemplate) -> None:
    """The agent writes its beat to its task item itself (spotrun.access, WriteOwnBeat): the stack has no
    heartbeat queue or function. A live worker's stored beat is at most a heartbeat interval old, so one
    failed beat write does not make it look lost, and the reaper finds a lost worker within 3 minutes."""
    from dataclasses import fields

    from spotrun.control import Settings
    from spotrun_worker.config import AgentConfig

    assert "heartbeats" not in query.queues() and "heartbeat" not in query.functions()
    beat = next(f.default for f in fields(AgentConfig) if f.name == "heartbeat_seconds")
    stale = next(f.default for f in fields(Settings) if f.name == "heartbeat_stale_seconds")
    assert 2 * beat < stale <= 180, (beat, stale)
