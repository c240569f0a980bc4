"""IAM for the local runtime's workers: a WSGI middleware that evaluates their requests before moto.

moto accepts every signed request and evaluates neither conditions, policy variables nor session
tags, so a local agent could read every task's items and checkpoints. `IamGuard` evaluates each
request signed by a *guarded* session (of a role in `role_policies`: registered when anyone assumes
that role through moto's STS, or with `register`) against its role's policy, refuses the way AWS
does (in the service's own error protocol), and hands every other request to moto untouched.
Authorization only: signatures are not verified (nor does moto verify them), so it confines clients
using their own credentials, not a process that signs with another key or sends unsigned requests.

Three layers:
- `spotrun_local.iam_requests` turns a request into the (action, resource, context) questions it
  raises, per service; all of them must be allowed;
- `spotrun_local.iam_policy` answers one question against a policy document (IAM's evaluation,
  the subset documented there);
- this module: the sessions, the condition keys a session brings to each question, the refusals
  and the WSGI plumbing (STS AssumeRole is watched so that the sessions of guarded roles are
  registered with the session tags moto drops).
Condition keys supplied: aws:PrincipalTag/<key>, aws:PrincipalArn (the role), ec2:SourceInstanceARN,
aws:ResourceTag/<key> (from `resource_tags`), lambda:FunctionUrlAuthType and lambda:InvokedViaFunctionUrl
(calls through a function URL, `function_url_denial`), and the translators' aws:ARN (EC2 instance actions),
dynamodb:LeadingKeys, dynamodb:Attributes and dynamodb:ReturnValues (single-item requests), s3:prefix
(listings), aws:RequestTag/<key> and aws:TagKeys (AssumeRole); any other key is missing.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from spotrun.access import FUNCTION_URL_CALL
from spotrun_local.iam_policy import Decision, check_supported, evaluate, uses_resource_tags
from spotrun_local.iam_requests import FORM, AccessRequest, HttpRequest, access_requests, caller, sts_call

__all__ = ["AccessRequest", "Decision", "Denial", "IamGuard", "Session", "check_supported", "evaluate"]

log = logging.getLogger("spotrun.local.iam")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Session:
    access_key_id: str
    role_arn: str
    session_name: str
    principal_arn: str
    tags: Mapping[str, str] = field(default_factory=dict)
    source_instance_arn: str | None = None


@dataclass(frozen=True)
class Denial:
    principal_arn: str
    action: str
    resource: str
    reason: str


# --- refusals -------------------------------------------------------------------------------------

def _refusal(service: str, request: HttpRequest, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """A refusal in the service's protocol, which botocore parses as the error code AWS would send."""
    request_id = str(uuid.uuid4())
    headers = [("x-amzn-RequestId", request_id), ("x-amz-request-id", request_id)]
    if service == "dynamodb" or request.header("X-Amz-Target"):  # JSON protocols
        error_type = {"dynamodb": "com.amazon.coral.service#AccessDeniedException",
                      "sqs": "com.amazonaws.sqs#AccessDenied"}.get(service, "AccessDeniedException")
        status = "403 Forbidden" if service == "sqs" else "400 Bad Request"
        headers += [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", error_type.rpartition("#")[2])]
        if service == "sqs":  # SQS speaks JSON with the error codes of its former query protocol
            headers.append(("x-amzn-query-error", "AccessDenied;Sender"))
        body = json.dumps({"__type": error_type, "message": message})
    else:
        status = "403 Forbidden"  # the header is what the REST JSON protocols read
        headers += [("Content-Type", "text/xml"), ("x-amzn-ErrorType", "AccessDeniedException")]
        error = f"<Code>{'UnauthorizedOperation' if service == 'ec2' else 'AccessDenied'}</Code>" \
                f"<Message>{escape(message)}</Message>"
        body = {"s3": f"<Error>{error}<RequestId>{request_id}</RequestId></Error>",
                "ec2": f"<Response><Errors><Error>{error}</Error></Errors>"
                       f"<RequestID>{request_id}</RequestID></Response>",
                }.get(service, f"<ErrorResponse><Error><Type>Sender</Type>{error}</Error>"
                               f"<RequestId>{request_id}</RequestId></ErrorResponse>")  # STS, other query protocols
    payload = b"" if request.method == "HEAD" else body.encode()
    return status, [*headers, ("Content-Length", str(len(payload)))], payload


# --- the guard ---------------------------------------------------------------------------------


class IamGuard:
    """Evaluates the requests of guarded sessions against their role's policy (see the module docstring).

    `role_policies` maps a role ARN to its policy document; `partition_key` names the tables' partition
    key attribute (for dynamodb:LeadingKeys); `resource_tags(arn)` gives the tags of a request's resource
    (return {} for one you do not know), asked only for roles whose policies use aws:ResourceTag.
    `denials` lists every refusal; `wrap(app)` is the WSGI app to serve in front of moto's.
    """

    def __init__(self, role_policies: dict[str, dict[str, Any]], *, region: str, account: str,
                 partition_key: str = "pk", resource_tags: Callable[[str], dict[str, str]] | None = None):
        for policy in role_policies.values():
            check_supported(policy)
        self.region, self.account, self.partition_key = region, account, partition_key
        self.denials: list[Denial] = []
        self._policies = dict(role_policies)
        self._resource_tags = resource_tags
        # Only roles whose policies look at resource tags pay for fetching them.
        self._uses_resource_tags = {role for role, policy in role_policies.items() if uses_resource_tags(policy)}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def add_role(self, role_arn: str, policy: dict[str, Any]) -> None:
        """Guard sessions of one more role (the local runtime adds its roles once moto has them)."""
        check_supported(policy)
        with self._lock:
            self._policies[role_arn] = policy
            if uses_resource_tags(policy):
                self._uses_resource_tags.add(role_arn)

    def register(self, access_key_id: str, role_arn: str, session_name: str, tags: dict[str, str] | None = None,
                 source_instance_arn: str | None = None) -> None:
        """Guards the requests signed with this access key by the role's policy."""
        if role_arn not in self._policies:
            raise ValueError(f"no policy for {role_arn}")
        principal = f"arn:aws:sts::{self.account}:assumed-role/{role_arn.rpartition('/')[2]}/{session_name}"
        session = Session(access_key_id, role_arn, session_name, principal, dict(tags or {}), source_instance_arn)
        with self._lock:
            self._sessions[access_key_id] = session

    def session(self, access_key_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(access_key_id)

    def authorize(self, session: Session, request: AccessRequest) -> Decision:
        if request.unreadable:
            return Decision(False, f"because the local IAM guard could not read the request: {request.unreadable}")
        context: dict[str, Sequence[str]] = {f"aws:PrincipalTag/{key}": [value] for key, value in session.tags.items()}
        context["aws:PrincipalArn"] = [session.role_arn]
        if session.source_instance_arn:
            context["ec2:SourceInstanceARN"] = [session.source_instance_arn]
        if self._resource_tags and request.resource != "*" and session.role_arn in self._uses_resource_tags:
            context.update({f"aws:ResourceTag/{key}": [value]
                            for key, value in self._resource_tags(request.resource).items()})
        context.update(request.context)
        return evaluate(self._policies[session.role_arn], request.action, request.resource, context)

    def function_url_denial(self, access_key_id: str, function_arn: str) -> Denial | None:
        """Why a call signed with this key through the function URL of `function_arn` is refused: IAM must allow
        both questions Lambda asks for it (`spotrun.access.FUNCTION_URL_CALL`). A signer the guard does not
        know has no policy here, so it is refused too (the local function URL serves guarded sessions only)."""
        session = self.session(access_key_id)
        if session is None:
            denial: Denial | None = Denial(f"access key {access_key_id}", FUNCTION_URL_CALL[0][0], function_arn,
                                           "because no identity-based policy of a known role allows it")
        else:
            denial = self._first_denial(session, (AccessRequest(action, function_arn, {key: [value]})
                                                  for action, condition in FUNCTION_URL_CALL
                                                  for key, value in condition.items()))
        if denial is not None:
            with self._lock:
                self.denials.append(denial)
            log.warning("denied %s %s on %s %s", denial.principal_arn, denial.action, denial.resource, denial.reason)
        return denial

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """The WSGI app that guards `app` (moto's server)."""

        def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            access_key_id, service = caller(environ) or ("", "")
            session = self.session(access_key_id)
            unsigned_form = not service and str(environ.get("CONTENT_TYPE", "")).startswith(FORM)
            if service == "sts" or unsigned_form:  # unsigned: maybe AssumeRoleWithWebIdentity or ...WithSAML
                return self._sts(app, HttpRequest(environ), start_response, session)
            if session is None:
                return app(environ, start_response)
            request = HttpRequest(environ)
            denial = self._first_denial(session, access_requests(
                service, request, region=self.region, account=self.account, partition_key=self.partition_key))
            if denial:
                return self._refuse(denial, service, request, start_response)
            return app(environ, start_response)

        return guarded

    def _first_denial(self, session: Session, requests: Iterable[AccessRequest]) -> Denial | None:
        for request in requests:
            decision = self.authorize(session, request)
            if not decision.allowed:
                return Denial(session.principal_arn, request.action, request.resource, decision.reason)
        return None

    def _refuse(self, denial: Denial, service: str, request: HttpRequest,
                start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.denials.append(denial)
        log.warning("denied %s %s on %s %s", denial.principal_arn, denial.action, denial.resource, denial.reason)
        request.drain()
        message = (f"User: {denial.principal_arn} is not authorized to perform: {denial.action} "
                   f"on resource: {denial.resource} {denial.reason}")
        status, headers, body = _refusal(service, request, message)
        start_response(status, headers)
        return [body]

    def _sts(self, app: WsgiApp, request: HttpRequest, start_response: StartResponse,
             session: Session | None) -> Iterable[bytes]:
        call = sts_call(request)
        if session is not None and (denial := self._first_denial(session, call.requests)):
            return self._refuse(denial, "sts", request, start_response)
        if call.action in ("AssumeRoleWithWebIdentity", "AssumeRoleWithSAML") and call.role_arn in self._policies:
            denial = Denial("anonymous", f"sts:{call.action}", call.role_arn, "because the local IAM guard hands "
                            "out the sessions of its roles through AssumeRole only")
            return self._refuse(denial, "sts", request, start_response)
        if call.action == "AssumeRole" and call.role_arn in self._policies:
            return self._assume_guarded_role(app, request, start_response, call.role_arn, call.session_name, call.tags)
        return app(request.environ, start_response)

    def _assume_guarded_role(self, app: WsgiApp, request: HttpRequest, start_response: StartResponse,
                             role_arn: str, session_name: str, tags: dict[str, str]) -> Iterable[bytes]:
        """moto answers the AssumeRole; its new access key is registered with the tags moto drops."""
        response: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            response.update(status=status, headers=headers, exc_info=exc_info)
            return chunks.append

        body = app(request.environ, capture)
        try:
            chunks.extend(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        payload = b"".join(chunks)
        if response["status"].startswith("200"):
            try:
                access_key_id = next((element.text for element in ElementTree.fromstring(payload).iter()
                                      if element.tag.rpartition("}")[2] == "AccessKeyId"), None)
            except ElementTree.ParseError:
                access_key_id = None
            if not access_key_id:  # never hand out the credentials of a guarded role unguarded
                denial = Denial(f"session {session_name}", "sts:AssumeRole", role_arn,
                                "because the local IAM guard could not read the new session's access key")
                return self._refuse(denial, "sts", request, start_response)
            self.register(access_key_id, role_arn, session_name, tags)
        start_response(response["status"], response["headers"], response["exc_info"])
        return [payload]
