"""Fuzz the HTTP API from its own OpenAPI document with schemathesis, against the real handler and moto.

Requests go over real HTTP through the local API gateway (`spotrun_local.gateway`), signed with SigV4
like any client's. So the fuzzer meets what a client meets (the URL encoding of odd path and query
values, the UTF-8 body, the proxy event API Gateway builds, a handler crash becoming a 502), and
schemathesis' own transport and checks run unmodified, with no hand-written response adapter to get
wrong. The price is a few milliseconds per request.

Every operation is fuzzed with data that fits the document (positive) and data that does not
(negative). Checks: no 5xx; every status code, content type and body is one the document declares;
data the document calls invalid is rejected; a request that was rejected stored nothing.

The in-suite run is short and derandomized (a fixed seed). For a longer one, or other examples:
    SPOTRUN_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/fuzz/test_api_fuzz.py
    SPOTRUN_FUZZ_SEED=7 .venv/bin/pytest tests/fuzz/test_api_fuzz.py
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from spotrun.attempts import claim, commit_checkpoint
from spotrun.domain.messages import AttemptRef, CompletionReport, ControlMessage, ProgramResult
from spotrun.domain.model import Checkpoint
from spotrun.domain.spec import MAX_PARAMETER_SETS, MAX_TASKS
from spotrun.handlers import api, finisher, scheduler
from spotrun_local.gateway import LocalCredentials, new_local_credentials, start_gateway
from tests.fuzz.support import item_count, sns_envelope, sqs_event
from tests.support import LambdaContextStub

EXAMPLES = int(os.environ.get("SPOTRUN_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("SPOTRUN_FUZZ_SEED", "20261123"))
MAX_FUZZ_TASKS = 50  # valid task counts above this are scaled down: storing 10^5 tasks in moto takes minutes

DOCUMENT: dict[str, Any] = json.loads(api.app.get_openapi_json_schema(title="spotrun", version="1.0.0"))
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
SEED_JOBS = [
    {"name": "fuzz-busy", "command": "python sim.py", "tasks": 3, "combine": {"command": "python merge.py"}},
    {"name": "fuzz-combine", "command": ["python", "sim.py"], "parameters": [{"SEED": "1"}, {"SEED": "2"}],
     "combine": {"command": "python merge.py", "outputs": ["all.csv"]}, "tags": {"team": "fuzz"}},
    {"name": "fuzz-cancelled", "command": "sleep 1", "tasks": 2},
]


class SigV4(requests.auth.AuthBase):
    """Sign each request exactly as it is sent (its final URL and body), for `execute-api`."""

    def __init__(self, credentials: LocalCredentials):
        self.credentials = Credentials(credentials.access_key_id, credentials.secret_access_key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        signed = AWSRequest(method=request.method, url=request.url, data=body or b"")
        SigV4Auth(self.credentials, "execute-api", "us-east-1").add_auth(signed)
        for name in ("Authorization", "X-Amz-Date"):
            request.headers[name] = signed.headers[name]
        return request


@dataclass
class Served:
    url: str
    auth: SigV4
    cp: Any
    jobs: list[str]  # the seeded jobs' ids


@pytest.fixture(scope="module")
def served(module_cp: Any) -> Iterator[Served]:
    """The gateway in front of the real handler, with a few jobs to find: one busy, one cancelled."""
    credentials = new_local_credentials()
    gateway = start_gateway(partial(api.handler, control=module_cp), credentials)
    try:
        auth = SigV4(credentials)
        ids = [requests.post(f"{gateway.url}/jobs", json=job, auth=auth, timeout=10).json()["job_id"]
               for job in SEED_JOBS]
        assert requests.post(f"{gateway.url}/jobs/{ids[2]}/cancel", auth=auth, timeout=10).status_code == 202
        make_busy(module_cp, ids[0])
        yield Served(gateway.url, auth, module_cp, ids)
    finally:
        gateway.stop()


def make_busy(cp: Any, job_id: str) -> None:
    """Launch the job's tasks; one runs with progress and a checkpoint, one succeeded, one failed: every
    field of the task and job views gets a value."""
    context = LambdaContextStub()
    control = ControlMessage(type="JobSubmitted", job_id=job_id).model_dump_json()
    assert scheduler.handler(sqs_event(sns_envelope(control)), context, control=cp) == {"batchItemFailures": []}
    tasks = [claim(cp, AttemptRef(job_id=job_id, index=i, attempt=t.attempt, instance_id=t.instance_id))
             for i, t in enumerate(cp.store.get_task(job_id, i) for i in range(3))]
    at = cp.clock.advance(30)
    assert cp.store.record_beat(job_id, 0, tasks[0].attempt, at, 0.5)
    assert commit_checkpoint(cp, AttemptRef(job_id=job_id, index=0, attempt=tasks[0].attempt,
                                            instance_id=tasks[0].instance_id),
                             Checkpoint(1, f"checkpoints/{job_id}/0/1", tasks[0].attempt, 4096, at, "signal"))
    reports = [CompletionReport(job_id=job_id, index=t.index, attempt=t.attempt, instance_id=t.instance_id, sent_at=at,
                                outcome="completed", program=ProgramResult(exit_code=code, exec_seconds=12.5,
                                                                           log_tail="done\n"))
               for t, code in ((tasks[1], 0), (tasks[2], 3))]
    event = sqs_event(*(r.model_dump_json() for r in reports))
    assert finisher.handler(event, context, control=cp) == {"batchItemFailures": []}


def _bounded(case: Any) -> Any:
    """Keep a valid job small; the sizes stay valid, so a negative case stays negative."""
    body = case.body
    if isinstance(body, dict):
        tasks = body.get("tasks")
        if type(tasks) in (int, float) and math.isfinite(tasks) and MAX_FUZZ_TASKS < tasks <= MAX_TASKS:
            body["tasks"] = type(tasks)(int(tasks) % MAX_FUZZ_TASKS + 1)  # 99999.0 is an integer too
        parameters = body.get("parameters")
        if isinstance(parameters, list) and MAX_FUZZ_TASKS < len(parameters) <= MAX_PARAMETER_SETS:
            body["parameters"] = parameters[:MAX_FUZZ_TASKS]
    return case


def test_the_served_document_is_the_one_fuzzed(served: Served) -> None:
    response = requests.get(f"{served.url}/openapi.json", auth=served.auth, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == DOCUMENT
    documented = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert len(documented) == len(OPERATIONS) == 14


@pytest.mark.parametrize(("label", "parameters"), [
    ("GET /jobs", {}), ("GET /jobs/{job_id}", {}), ("GET /jobs/{job_id}/tasks", {}),
    ("GET /jobs/{job_id}/tasks/{index}", {"index": 0}), ("GET /jobs/{job_id}/tasks/{index}", {"index": 2}),
    ("GET /jobs/{job_id}/tasks/{index}", {"index": 3}), ("GET /jobs/{job_id}/events", {}),
    ("GET /jobs/{job_id}/stats", {}), ("GET /jobs/{job_id}/outputs", {}),
    ("GET /jobs/{job_id}/tasks/{index}/logs", {"index": 0}),
], ids=lambda value: str(value.get("index", "")) if isinstance(value, dict) else value)
def test_the_views_of_a_busy_job_are_as_documented(served: Served, label: str, parameters: dict[str, Any]) -> None:
    operation = OPERATIONS[label]
    path = {"job_id": served.jobs[0], **parameters} if "{job_id}" in operation.path else None
    case = operation.Case(path_parameters=path)
    response = case.call(base_url=served.url, auth=served.auth, timeout=30, headers={"Connection": "close"})
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_the_api_answers_every_request_as_its_document_says(served: Served, label: str, mode: GenerationMode) -> None:
    operation = OPERATIONS[label]
    strategy = operation.as_strategy(generation_mode=mode).map(_bounded)
    known_job = "{job_id}" in operation.path and mode.is_positive

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=strategy, data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        if known_job and data.draw(st.booleans(), label="a seeded job"):
            # Valid ids are almost never ones that exist: reach the code behind the 404 too.
            case.path_parameters["job_id"] = data.draw(st.sampled_from(served.jobs), label="job")
            if "index" in case.path_parameters:
                case.path_parameters["index"] = data.draw(st.integers(0, 3), label="index")
        before = item_count(served.cp)
        # A fresh connection per request: keep-alive through http.server costs 40 ms of delayed ACK each.
        response = case.call(base_url=served.url, auth=served.auth, timeout=30, headers={"Connection": "close"})
        if "x-amzn-requestid" not in {name.lower() for name in response.headers}:
            # The gateway answered by itself, as API Gateway does outside the document: only for a body
            # that is not UTF-8 (negative data). Its 403/413/502 must never be seen here.
            assert (response.status_code, response.json()) == (400, {"message": "the request body must be UTF-8 text"})
            return
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert item_count(served.cp) == before, f"{label} answered {response.status_code} but stored something"

    fuzz()


def _tokens(served: Served, path: str, **query: Any) -> list[str]:
    """The next_tokens a listing hands out, page by page (one item a page)."""
    found, token = [], None
    while True:
        params = {**query, "limit": 1, **({"next_token": token} if token else {})}
        page = requests.get(f"{served.url}{path}", params=params, auth=served.auth, timeout=10).json()
        token = page["next_token"]
        if not token:
            return found
        found.append(token)


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_next_token_is_checked_whatever_it_holds(served: Served) -> None:
    """Page tokens are sealed (spotrun.domain.pages): a token the API did not give out for this listing is
    a 400 saying so, whatever it holds (a forged cursor used to reach DynamoDB's key condition: a 502)."""
    listings = [("/jobs", {}), (f"/jobs/{served.jobs[0]}/tasks", {}), (f"/jobs/{served.jobs[1]}/tasks", {}),
                (f"/jobs/{served.jobs[0]}/tasks", {"state": "SUCCEEDED"})]
    genuine = {i: _tokens(served, path, **query) for i, (path, query) in enumerate(listings)}
    assert all(genuine[i] for i in (0, 1, 2)), genuine
    tokens = [t for found in genuine.values() for t in found]
    cursor = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=30)),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                      max_size=3), max_leaves=8)

    def forged(draw: st.DrawFn) -> str:
        token = draw(st.sampled_from(tokens))
        version, payload, tag = token.split(".")
        how = draw(st.sampled_from(["as is", "flip", "cut", "grow", "cursor", "raw cursor", "text"]))
        if how == "flip":
            at = draw(st.integers(0, len(token) - 1))
            return token[:at] + draw(st.sampled_from("AQ_-.9z")) + token[at + 1:]
        if how == "cut":
            return token[:draw(st.integers(0, len(token) - 1))]
        if how == "grow":
            return token + draw(st.text("AZaz09_-.=", min_size=1, max_size=8))
        if how == "cursor":  # a made-up cursor under a genuine tag
            return f"{version}.{_b64(json.dumps(draw(cursor)).encode())}.{tag}"
        if how == "raw cursor":  # the store's own cursor shape, unsealed
            return _b64(json.dumps(draw(cursor)).encode())
        if how == "text":
            return draw(st.text(min_size=1, max_size=60))
        return token

    @seed(SEED)
    @settings(max_examples=EXAMPLES * 4, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(which=st.integers(0, len(listings) - 1), token=st.composite(forged)())
    def fuzz(which: int, token: str) -> None:
        path, query = listings[which]
        answer = requests.get(f"{served.url}{path}", params={**query, "next_token": token}, auth=served.auth,
                              timeout=10, headers={"Connection": "close"})
        if token in genuine[which] or token == "":  # an empty token asks for the first page
            assert answer.status_code == 200, answer.text
        elif "x-amzn-requestid" in {name.lower() for name in answer.headers}:
            assert answer.status_code == 400, (answer.status_code, answer.text)
            body = answer.json()
            assert body["error"] in ("the page token is not one this API gave out", "invalid request"), body
        else:  # the gateway refused a query that is not UTF-8 by itself, as API Gateway does
            assert answer.status_code == 400

    fuzz()
