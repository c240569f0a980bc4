"""The HTTP API through the real handler with API Gateway proxy events, against moto."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from spotrun.handlers import api
from tests.support import api_event

GOOD = {"name": "sweep", "command": "python sim.py", "tasks": 30, "max_concurrency": 5}


def call(cp: Any, context: Any, method: str, path: str, body: Any = None, **query: str) -> tuple[int, Any]:
    answer = api.handler(api_event(method, path, body, query or None), context, control=cp)
    return answer["statusCode"], json.loads(answer["body"])


def test_a_valid_job_is_accepted_with_its_id_and_stored_with_every_task(cp, context):
    status, body = call(cp, context, "POST", "/jobs", GOOD)
    assert status == 202 and body["created"] is True and body["tasks"] == 30
    status, job = call(cp, context, "GET", f"/jobs/{body['job_id']}")
    assert status == 200 and job["counts"] == {"QUEUED": 30} and job["state"] == "QUEUED"
    assert job["spec"]["max_concurrency"] == 5


@pytest.mark.parametrize(("spec", "fields"), [
    ({"command": "x"}, {"name"}),
    ({"name": "x"}, {"command"}),
    ({"name": "x", "command": "x", "tasks": 0}, {"tasks"}),
    ({"name": "x", "command": "x", "tasks": 1_000_001}, {"tasks"}),
    ({"name": "x", "command": "x", "tasks": 2, "parameters": [{"A": "1"}]}, {"(body)"}),
    ({"name": "x", "command": "x", "colour": "red"}, {"colour"}),
    ({"name": "x; rm -rf /", "command": "x"}, {"name"}),
    ({"name": "x", "command": "x", "resources": {"vcpus": "many", "gpus": -1}}, {"resources.vcpus", "resources.gpus"}),
    ({"name": "x", "command": "x", "outputs": ["../../etc/passwd"]}, {"outputs.0"}),
    ({"name": "x", "command": "x", "inputs": ["http://example.com/a"]}, {"inputs.0"}),
    ({"name": "x", "command": "x", "parameters": [{"SPOTRUN_TASK_INDEX": "1"}]}, {"parameters"}),
    ({"name": "x", "command": "x", "checkpoint": {"method": "criu"}}, {"checkpoint.method"}),
    ({"name": "x", "command": "x", "timeout": "soon"}, {"timeout"}),
    ({"name": "x", "command": "x", "deadline": "2026-12-01T00:00:00"}, {"deadline"}),
])
def test_an_invalid_spec_gets_a_400_naming_each_wrong_field_and_nothing_is_stored(cp, context, spec, fields):
    status, body = call(cp, context, "POST", "/jobs", spec)
    assert status == 400, body
    named = {p["field"] for p in body["problems"]}
    assert fields <= {f.split(".")[0] if f == "(body)" else f for f in named} | named, body
    assert cp.store.list_jobs(list(__import__("spotrun.domain.model", fromlist=["JobState"]).JobState), 10, None)[0] == []


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", "null"])
def test_a_body_that_is_not_a_json_object_is_a_400(cp, context, raw):
    status, body = call(cp, context, "POST", "/jobs", raw)
    assert status == 400, body


def test_the_same_idempotency_key_returns_the_same_job(cp, context):
    first = call(cp, context, "POST", "/jobs", GOOD, idempotency_key="run-7")[1]
    second = call(cp, context, "POST", "/jobs", GOOD, idempotency_key="run-7")[1]
    assert first["job_id"] == second["job_id"] and first["created"] and not second["created"]


def test_jobs_are_listed_newest_first_page_by_page(cp, context, clock):
    ids = []
    for n in range(5):
        clock.advance(1)
        ids.append(call(cp, context, "POST", "/jobs", {**GOOD, "name": f"job{n}"})[1]["job_id"])
    seen, token = [], None
    while True:
        query = {"limit": "2", **({"next_token": token} if token else {})}
        status, page = call(cp, context, "GET", "/jobs", **query)
        assert status == 200 and len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        token = page["next_token"]
        if not token:
            break
    assert seen == list(reversed(ids))
    status, queued = call(cp, context, "GET", "/jobs", state="QUEUED")
    assert status == 200 and len(queued["jobs"]) == 5
    assert call(cp, context, "GET", "/jobs", state="SUCCEEDED")[1]["jobs"] == []


def test_a_jobs_tasks_are_listed_page_by_page_without_loss(cp, context):
    job_id = call(cp, context, "POST", "/jobs", {**GOOD, "tasks": 45})[1]["job_id"]
    seen, token = [], None
    while True:
        query = {"limit": "7", **({"next_token": token} if token else {})}
        status, page = call(cp, context, "GET", f"/jobs/{job_id}/tasks", **query)
        assert status == 200
        seen += [t["index"] for t in page["tasks"]]
        token = page["next_token"]
        if not token:
            break
    assert sorted(seen) == list(range(45)) and len(seen) == 45
    status, queued = call(cp, context, "GET", f"/jobs/{job_id}/tasks", state="QUEUED", limit="100")
    assert status == 200 and len(queued["tasks"]) == 45


def test_unknown_ids_are_404s(cp, context):
    assert call(cp, context, "GET", "/jobs/j-00000000000000000000")[0] == 404
    assert call(cp, context, "GET", "/jobs/j-00000000000000000000/tasks")[0] == 404
    assert call(cp, context, "POST", "/jobs/j-00000000000000000000/cancel")[0] == 404
    assert call(cp, context, "GET", "/nowhere")[0] == 404


def test_a_malformed_id_or_action_is_a_400_or_404_not_a_500(cp, context):
    assert call(cp, context, "GET", "/jobs/not-an-id")[0] == 400
    assert call(cp, context, "POST", "/jobs/j-00000000000000000000/explode")[0] in (400, 404)
    assert call(cp, context, "GET", "/jobs", limit="0")[0] == 400
    assert call(cp, context, "GET", "/jobs", next_token="garbage!")[0] == 400


def test_actions_the_state_does_not_allow_are_409s_saying_why(cp, context):
    job_id = call(cp, context, "POST", "/jobs", GOOD)[1]["job_id"]
    status, body = call(cp, context, "POST", f"/jobs/{job_id}/resume")
    assert status == 409 and "cannot be resumed" in body["error"]
    assert call(cp, context, "POST", f"/jobs/{job_id}/suspend")[0] == 202
    assert call(cp, context, "POST", f"/jobs/{job_id}/suspend")[0] == 202  # asking twice is fine
    assert call(cp, context, "POST", f"/jobs/{job_id}/resume")[0] == 202
    assert call(cp, context, "POST", f"/jobs/{job_id}/cancel")[0] == 202
    status, body = call(cp, context, "POST", f"/jobs/{job_id}/suspend")
    assert status == 409 and "being cancelled" in body["error"]


def test_the_timeline_starts_with_the_submission(cp, context):
    job_id = call(cp, context, "POST", "/jobs", GOOD)[1]["job_id"]
    status, body = call(cp, context, "GET", f"/jobs/{job_id}/events")
    assert status == 200 and body["events"][0]["kind"] == "JobSubmitted"


def test_the_openapi_document_describes_the_routes_and_the_spec(cp, context):
    status, document = call(cp, context, "GET", "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    assert "/jobs" in document["paths"] and "/jobs/{job_id}/tasks" in document["paths"]
    assert "JobSpec" in document["components"]["schemas"]


def test_upload_urls_are_presigned_puts_into_the_private_bucket(cp, context):
    status, body = call(cp, context, "POST", "/uploads", {"filename": "data set.csv"})
    assert status == 200 and body["uri"].startswith(f"s3://{cp.settings.bucket}/uploads/")
    assert "X-Amz-Signature=" in body["url"] and body["uri"].endswith("data_set.csv")


def test_a_retried_submit_of_a_job_nothing_was_admitted_for_wakes_the_scheduler_again(cp, context):
    # Found by the chaos soak: a submit that stored the job but died before its wake-up left the job to the reaper
    sent = []
    real_send = cp.bus.send
    cp.bus.send = lambda message: (sent.append(message.type), real_send(message))
    call(cp, context, "POST", "/jobs", GOOD, idempotency_key="run-8")
    sent.clear()
    _, again = call(cp, context, "POST", "/jobs", GOOD, idempotency_key="run-8")
    assert not again["created"] and sent == ["JobSubmitted"]


def _forged(cursor: Any) -> str:
    """A token shaped as the store's cursors once were (base64 JSON), made up by a client."""
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()


def _pages(cp: Any, context: Any, path: str, **query: str) -> list[str]:
    """Every next_token a listing hands out, page by page."""
    tokens, token = [], None
    while True:
        status, page = call(cp, context, "GET", path, **{**query, **({"next_token": token} if token else {})})
        assert status == 200, page
        token = page["next_token"]
        if not token:
            return tokens
        tokens.append(token)


NOT_OURS = {"error": "the page token is not one this API gave out"}


@pytest.mark.parametrize("cursor", [
    {"QUEUED": 5}, {"QUEUED": {"S": "x"}}, {"RUNNING": "2026-11-23T12:00:00.000000Z#j-00000000000000000000"},
    {"after": {"pk": "JOB#x", "sk": "JOB"}}, {"shard": "x"}, {"shard": 1, "after": {"S": "000001"}},
    {"shard": -1, "after": None}, {"shard": 10**9, "after": None}, {"shard": 0, "after": "x" * 300}, ["QUEUED"], "x",
], ids=str)
def test_a_page_token_this_api_did_not_give_out_is_a_400(cp, context, cursor):
    """Forged cursors used to reach DynamoDB's key condition (a TypeError under moto, a ValidationException
    on AWS: 502) or to answer with Python's own error text."""
    job_id = call(cp, context, "POST", "/jobs", {**GOOD, "tasks": 3})[1]["job_id"]
    for path in ("/jobs", f"/jobs/{job_id}/tasks"):
        status, body = call(cp, context, "GET", path, next_token=_forged(cursor))
        assert (status, body) == (400, NOT_OURS), (path, body)


def test_a_page_token_is_good_only_for_the_listing_that_gave_it_out(cp, context, clock):
    first = call(cp, context, "POST", "/jobs", {**GOOD, "tasks": 30})[1]["job_id"]
    second = call(cp, context, "POST", "/jobs", {**GOOD, "tasks": 30})[1]["job_id"]
    for _ in range(3):
        clock.advance(1)
        call(cp, context, "POST", "/jobs", GOOD)
    jobs_token = _pages(cp, context, "/jobs", limit="2")[0]
    tasks_token = _pages(cp, context, f"/jobs/{first}/tasks", limit="5")[0]
    queued_token = _pages(cp, context, f"/jobs/{first}/tasks", limit="5", state="QUEUED")[0]
    refused = [
        ("/jobs", tasks_token, {}), (f"/jobs/{first}/tasks", jobs_token, {}),  # another listing's
        (f"/jobs/{second}/tasks", tasks_token, {}),  # another job's
        (f"/jobs/{first}/tasks", queued_token, {}), (f"/jobs/{first}/tasks", tasks_token, {"state": "QUEUED"}),
        ("/jobs", jobs_token, {"state": "QUEUED"}),  # another filter's
        ("/jobs", jobs_token[:-2] + ("AA" if not jobs_token.endswith("AA") else "BB"), {}),  # tampered
        ("/jobs", jobs_token + "x", {}), ("/jobs", jobs_token.replace(".", "", 1), {}),
    ]
    for path, token, query in refused:
        status, body = call(cp, context, "GET", path, next_token=token, **query)
        assert (status, body) == (400, NOT_OURS), (path, query)
    assert call(cp, context, "GET", f"/jobs/{first}/tasks", next_token=tasks_token)[0] == 200
    assert call(cp, context, "GET", "/jobs", next_token=jobs_token, limit="2")[0] == 200


def test_a_base64_encoded_body_is_decoded(cp, context):
    """API Gateway sets isBase64Encoded for a binary media type; the body is then base64 text."""
    event = api_event("POST", "/jobs", base64.b64encode(json.dumps(GOOD).encode()).decode())
    event["isBase64Encoded"] = True
    answer = api.handler(event, context, control=cp)
    assert answer["statusCode"] == 202, answer["body"]


def test_every_refusal_has_the_one_error_shape_the_document_names(cp, context):
    """The 415 Powertools answers for a body that is not JSON by its content type had its own shape."""
    document = call(cp, context, "GET", "/openapi.json")[1]
    event = api_event("POST", "/jobs", GOOD)
    event["headers"]["Content-Type"] = "text/plain"
    answer = api.handler(event, context, control=cp)
    assert answer["statusCode"] == 415
    body = json.loads(answer["body"])
    assert set(body) <= {"error", "problems"} and "application/json" in body["error"], body
    refusals = [body]
    for method, path, payload, query in (("GET", "/jobs/not-an-id", None, {}), ("GET", "/nowhere", None, {}),
                                         ("POST", "/jobs", {"name": 1}, {}), ("GET", "/jobs", None, {"limit": "0"}),
                                         ("POST", "/jobs/j-00000000000000000000/cancel", None, {})):
        refusals.append(call(cp, context, method, path, payload, **query)[1])
    schema = document["components"]["schemas"]["ErrorBody"]
    for refusal in refusals:
        assert set(refusal) <= set(schema["properties"]) and set(schema["required"]) <= set(refusal), refusal
    for path, method in (("/jobs", "post"), ("/uploads", "post")):
        declared = document["paths"][path][method]["responses"]
        assert declared["415"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
