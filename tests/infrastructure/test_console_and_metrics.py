"""The dashboard of the synthesized stack: the console's custom widgets and their function (with its
least-privilege role), a metric widget for each measure operators watch, the alarms on the operations
topic, and the attempts' log group."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from template_query import StackTemplate, render

from spotrun import resources

HANDLERS = Path(__file__).resolve().parents[2] / "lambdas" / "spotrun" / "handlers"
# What issue 11 asks the dashboard to show: each measure, by the metric the handlers emit for it.
MEASURES = {
    "tasks by state": "Tasks", "launches per pool": "Launches", "capacity refusals per pool": "CapacityRefusals",
    "interruptions per pool": "Interruptions", "checkpoint seconds": "CheckpointSeconds",
    "checkpoint MiB": "CheckpointMiB", "restore seconds": "RestoreSeconds",
    "work lost per interruption": "WorkLostSeconds", "time from warning to running again": "RecoverySeconds",
    "spot and on-demand spend per hour": "SpendPerHour",
}


def _one(query: StackTemplate, resource_type: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, resource)] = query.of_type(resource_type).items()
    return logical_id, resource["Properties"]


def dashboard(query: StackTemplate) -> dict[str, Any]:
    _, props = _one(query, "AWS::CloudWatch::Dashboard")
    return json.loads(render(props["DashboardBody"]))


def console_function(query: StackTemplate) -> str:
    return query.functions()["console"]


def operations_topic(query: StackTemplate) -> str:
    [topic] = [lid for lid, t in query.of_type("AWS::SNS::Topic").items()
               if t["Properties"]["DisplayName"] == "spotrun operations"]
    return topic


def task_logs(query: StackTemplate) -> str:
    [group] = [lid for lid in query.of_type("AWS::Logs::LogGroup") if lid.startswith("StateTaskLogs")]
    return group


def test_the_dashboard_shows_the_console_as_custom_widgets_of_the_console_function(query: StackTemplate) -> None:
    custom = [w for w in dashboard(query)["widgets"] if w["type"] == "custom"]
    assert [w["properties"]["params"] for w in custom] == [{"view": "jobs"}, {"view": "job"}]
    for widget in custom:
        assert widget["properties"]["endpoint"] == f"${{{console_function(query)}.Arn}}"
        assert widget["properties"]["updateOn"] == {"refresh": True, "resize": True, "timeRange": False}
        assert widget["width"] == 24


def test_the_console_function_is_declared_once_for_the_stack_and_the_local_runtime(query: StackTemplate) -> None:
    declared = resources.function("console")
    assert declared.invoked_by == resources.DASHBOARD and declared.handler == "spotrun.handlers.console.handler"
    props = query.props(console_function(query))
    assert props["Handler"] == declared.handler and props["Timeout"] == declared.timeout_seconds


def test_the_console_functions_role_reads_the_table_and_logs_and_steers_through_the_control_topic(
        query: StackTemplate) -> None:
    statements = query.function_statements("console")
    actions = {a for s in statements for a in s.actions}
    assert not {a for a in actions if a.startswith(("ec2:", "s3:", "sts:", "iam:", "lambda:", "cloudwatch:"))}
    assert {a for a in actions if a.startswith("logs:")} == {"logs:GetLogEvents", "logs:CreateLogStream",
                                                            "logs:PutLogEvents"}
    writes_own = [s for s in statements if "logs:PutLogEvents" in s.actions]
    assert all(r.startswith("${Functionsconsolelogs") for s in writes_own for r in s.resources), "its own logs only"
    reads = [s for s in statements if "logs:GetLogEvents" in s.actions]
    group = f"log-group:${{{task_logs(query)}}}"
    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:"
    assert {r.removeprefix(prefix) for s in reads for r in s.resources} == {group, f"{group}:log-stream:*"}
    publishes = {render(r) for s in statements if s.allows("sns:Publish") for r in s.resources}
    topics = {t["Properties"]["DisplayName"]: lid for lid, t in query.of_type("AWS::SNS::Topic").items()}
    assert publishes == {f"${{{topics['spotrun control']}}}", f"${{{topics['spotrun notifications']}}}"}


def test_who_may_use_the_console_is_who_may_invoke_its_function(query: StackTemplate) -> None:
    [(_, policy)] = [(lid, p) for lid, p in query.of_type("AWS::IAM::ManagedPolicy").items()
                     if lid.startswith("ObservabilityConsoleAccess")]
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction" and statement["Effect"] == "Allow"
    assert render(statement["Resource"]) == f"${{{console_function(query)}.Arn}}"
    assert "ConsoleAccessPolicyArn" in query.template["Outputs"] and "DashboardUrl" in query.template["Outputs"]


def test_every_measure_has_a_metric_widget_of_a_metric_the_handlers_emit(query: StackTemplate) -> None:
    graphs = [w for w in dashboard(query)["widgets"] if w["type"] == "metric"]
    graphed = json.dumps([w["properties"].get("metrics", []) for w in graphs])
    source = "\n".join(path.read_text() for path in HANDLERS.glob("*.py"))
    for measure, name in MEASURES.items():
        assert re.search(rf'"spotrun",\s*"{name}"|MetricName=\\\\?"{name}\\\\?"', graphed), (measure, name)
        assert f'"{name}"' in source, f"no handler emits {name} ({measure})"
    per_pool = [w for w in graphs if w["properties"]["title"].endswith("per pool")]
    assert len(per_pool) == 3 and all("SEARCH('{spotrun,pool,service}" in json.dumps(w) for w in per_pool)


EXPECTED_ALARMS = {  # alarm id prefix -> (the metric it watches, its threshold)
    "Observabilitycheckpointslow": ("CheckpointSeconds", 90),
    "Observabilityworklost": ("WorkLostSeconds", 600),
    "Observabilityrecoveryslow": ("RecoverySeconds", 900),
    "Observabilityinterruptionshigh": ("Interruptions", 50),
    "Observabilitylostworkers": ("LostWorkers", 5),
    "Observabilityspendhigh": ("SpendPerHour", 50),
    "Observabilityworkerimagefaults": (resources.WORKER_IMAGE_FAULTS_METRIC, 0),
}


def test_operator_alarms_watch_what_matters_and_page_the_operations_topic(query: StackTemplate) -> None:
    alarms = query.of_type("AWS::CloudWatch::Alarm")
    for prefix, (metric, threshold) in EXPECTED_ALARMS.items():
        [props] = [a["Properties"] for lid, a in alarms.items() if lid.startswith(prefix)]
        assert (props["MetricName"], props["Namespace"], props["Threshold"]) == (metric, "spotrun", threshold), prefix
        assert props["Dimensions"] == [{"Name": "service", "Value": "spotrun"}]
        assert props["AlarmDescription"].startswith("spotrun: ")
    [refused] = [a["Properties"] for lid, a in alarms.items() if lid.startswith("Observabilitycapacityrefused")]
    expression = next(m["Expression"] for m in refused["Metrics"] if "Expression" in m)
    assert expression == "IF(calls >= 3, refused / calls, 0)" and refused["Threshold"] == 0.9
    assert refused["EvaluationPeriods"] == refused["DatapointsToAlarm"] == 3
    # every alarm, the pipeline's too, pages the operations topic and never the job notifications topic
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": operations_topic(query)}] for a in alarms.values())
    assert len(alarms) == len(EXPECTED_ALARMS) + 1 + len(query.functions()) + len(query.dead_letter_queues())


def test_cloudwatch_may_publish_to_the_operations_topic_only(query: StackTemplate) -> None:
    allowed = []
    for policy in query.of_type("AWS::SNS::TopicPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}:
                allowed.append(render(statement["Resource"]))
    assert allowed == [f"${{{operations_topic(query)}}}"]


def test_attempt_logs_are_kept_a_month_and_only_the_worker_api_opens_their_streams(query: StackTemplate) -> None:
    assert query.props(task_logs(query))["RetentionInDays"] == 30
    for key in (f.key for f in resources.FUNCTIONS):
        creates = any("logs:CreateLogStream" in s.actions and any(task_logs(query) in r for r in s.resources)
                      for s in query.function_statements(key))
        assert creates == (key == "worker-api"), key


def test_the_cost_models_fixed_monthly_cost_counts_the_stacks_alarms(query: StackTemplate) -> None:
    """bench/scale/cost.py prices a deployment's alarms per metric they watch (a metric-math alarm is
    billed for each metric in its expression), so it must watch as many as the stack makes."""
    from bench.scale.cost import ALARM_METRICS

    alarms = [a["Properties"] for a in query.of_type("AWS::CloudWatch::Alarm").values()]
    watched = sum(len([m for m in props["Metrics"] if "MetricStat" in m]) if "Metrics" in props else 1
                  for props in alarms)
    assert watched == ALARM_METRICS
