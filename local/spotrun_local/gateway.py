"""A local stand-in for API Gateway (REST, IAM-authorized) in front of the API handler.

Each HTTP request becomes the proxy event API Gateway would deliver (resource `/{proxy+}`, stage
`local`) and is answered with the handler's proxy response. Like `AWS_IAM` authorization, every
request must carry a valid SigV4 signature for `execute-api`; here the only identity is a pair of
random local credentials made per run (`new_local_credentials`), which the runtime prints. The
signature is recomputed with botocore's SigV4 signer over the received method, URL, signed headers
and body; requests signed more than 5 minutes from now, with another key or for another service are
refused with 403, as API Gateway does. The caller becomes `arn:aws:iam::000000000000:user/local`.

The console is served at `GET /?token=...` (see `spotrun_local.console_page`): the page of the
`console` function the stack puts on its CloudWatch dashboard, whose widgets it asks for with
`POST /console/call?token=...`; the gateway invokes the function with the custom widget event
CloudWatch would send. A browser cannot sign requests, so the page is authenticated by the per-run
token instead (`Gateway.ui_url`, printed by the runtime), and answered only to 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

from spotrun import resources
from spotrun_local import console_page
from spotrun_local.wiring import invoked_by, lambda_context

log = logging.getLogger("spotrun.local.gateway")

SERVICE = "execute-api"
STAGE = "local"
ACCOUNT = "000000000000"
LOCAL_USER_ARN = f"arn:aws:iam::{ACCOUNT}:user/local"
MAX_SKEW_SECONDS = 300
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")
_LOOPBACK = frozenset({"127.0.0.1", "::ffff:127.0.0.1"})

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class LocalCredentials:
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """The environment a client needs to sign for this gateway."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


def new_local_credentials() -> LocalCredentials:
    """Random credentials shaped like AWS's (a 20-character key id, a 40-character secret)."""
    alphabet = string.ascii_uppercase + "234567"
    return LocalCredentials("AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
                            secrets.token_urlsafe(30))


# ------------------------------------------------------------------ SigV4

class _Verifier(SigV4Auth):
    """botocore's SigV4 signer, told to canonicalize exactly the headers the client said it signed."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name.lower()] = value
        return headers


def verify_sigv4(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                 credentials: LocalCredentials, now: datetime | None = None,
                 max_skew: int = MAX_SKEW_SECONDS, service: str = SERVICE) -> str | None:
    """Why the request's SigV4 signature is not acceptable, or None when it is.

    `target` is the request line's path and query as received; `headers` every received header; `service`
    the one the signature must be for (API Gateway's execute-api, or lambda for a function URL).
    """
    received = list(headers)
    lookup: dict[str, list[str]] = {}
    for name, value in received:
        lookup.setdefault(name.lower(), []).append(value)
    authorization = (lookup.get("authorization") or [""])[-1]
    if not authorization:
        return f"missing Authorization header: requests must be signed with AWS SigV4 (service {service})"
    match = _AUTHORIZATION.match(authorization)
    if not match:
        return "malformed Authorization header: expected an AWS4-HMAC-SHA256 signature"
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return "malformed credential scope in the Authorization header"
    key_id, day, region, _, _ = scope
    if not hmac.compare_digest(key_id.encode(), credentials.access_key_id.encode()):
        return f"unknown access key {key_id}: sign with the local credentials the runtime printed"
    if scope[3] != service:
        return f"the signature is for service {scope[3]!r}, not {service!r}"
    stamp = (lookup.get("x-amz-date") or [""])[-1]
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Amz-Date header"
    if day != stamp[:8]:
        return "the credential scope's date does not match X-Amz-Date"
    skew = abs(((now or datetime.now(UTC)) - signed_at).total_seconds())
    if skew > max_skew:
        return f"request signature expired: X-Amz-Date {stamp} is more than {max_skew // 60} minutes from now"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "the signature must cover the host and x-amz-date headers"
    missing = [name for name in signed if name not in lookup]
    if missing:
        return f"signed header(s) missing from the request: {', '.join(missing)}"
    declared = (lookup.get("x-amz-content-sha256") or [None])[-1]
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        return "X-Amz-Content-SHA256 does not match the body"

    host = lookup["host"][-1]
    request = AWSRequest(method=method.upper(), url=f"http://{host}{target}", data=body or None)
    for name in signed:
        for value in lookup[name]:
            request.headers[name] = value  # HTTPHeaders: a repeated header keeps every value
    request.context["timestamp"] = stamp
    verifier = _Verifier(Credentials(credentials.access_key_id, credentials.secret_access_key), service, region)
    canonical = verifier.canonical_request(request)
    expected = verifier.signature(verifier.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected.encode(), match["signature"].encode()):
        return "the request signature does not match (wrong secret key, or the request changed after signing)"
    return None


# ------------------------------------------------------------------ the proxy event

def proxy_event(method: str, target: str, headers: Iterable[tuple[str, str]], body: str | None, *,
                source_ip: str, access_key: str, user_arn: str = LOCAL_USER_ARN, caller: str = "local",
                request_id: str | None = None) -> dict[str, Any]:
    """The REST API proxy event API Gateway delivers for this request (as `tests/support.api_event`)."""
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = {k: v for k, v in pairs} if pairs else None
    multi_query: dict[str, list[str]] | None = None
    if pairs:
        multi_query = {}
        for k, v in pairs:
            multi_query.setdefault(k, []).append(v)
    user_agent = next((v for k, v in single.items() if k.lower() == "user-agent"), "")
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": single, "multiValueHeaders": multi,
        "queryStringParameters": query, "multiValueQueryStringParameters": multi_query,
        "pathParameters": {"proxy": path.lstrip("/")} if path != "/" else None, "stageVariables": None,
        "requestContext": {
            "resourceId": "local", "resourcePath": "/{proxy+}", "httpMethod": method, "path": f"/{STAGE}{path}",
            "accountId": ACCOUNT, "stage": STAGE, "requestId": request_id or str(uuid.uuid4()), "apiId": "local",
            "protocol": "HTTP/1.1", "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"userArn": user_arn, "caller": caller, "accessKey": access_key, "sourceIp": source_ip,
                         "accountId": ACCOUNT, "user": caller, "userAgent": user_agent},
        },
        "body": body, "isBase64Encoded": False,
    }


# ------------------------------------------------------------------ the server

# Other signers a gateway accepts: access key id -> (their credentials, the identity's ARN), e.g. the
# worker instances' role sessions (the local runtime's worker routes).
Principals = Callable[[str], "tuple[LocalCredentials, str] | None"]
# The event a handler gets for one request (`proxy_event`'s signature): API Gateway's or a function URL's.
EventBuilder = Callable[..., dict[str, Any]]
# After the signature: why IAM refuses this signer (by access key id) the call, or None when it may make it.
Authorize = Callable[[str], "str | None"]


def signing_key_id(headers: Iterable[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "authorization":
            match = _AUTHORIZATION.match(value)
            return match["credential"].split("/", 1)[0] if match else ""
    return ""


class Gateway:
    def __init__(self, handler: Handler, credentials: LocalCredentials, host: str = "127.0.0.1", port: int = 0,
                 ui_token: str | None = None, clock: Callable[[], datetime] | None = None,
                 principals: Principals | None = None, function: str = "api", console: Handler | None = None,
                 service: str = SERVICE, event: EventBuilder = proxy_event, serves_page: bool = True,
                 authorize: Authorize | None = None, name: str = "api-gateway"):
        self.handler = handler
        self.service = service  # the SigV4 service requests must be signed for
        self.event = event
        self.serves_page = serves_page  # the console page and its calls (the users' gateway only)
        self.authorize = authorize
        self.name = name
        self.function = resources.function(function)  # the function behind the gateway: its Lambda context
        self.console = console  # the console function (resources: invoked by dashboards), for the page
        self.credentials = credentials
        self.principals = principals
        self.ui_token = ui_token or secrets.token_urlsafe(24)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._server = ThreadingHTTPServer((host, port), _make_request_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ui_url(self) -> str:
        return f"{self.url}/?token={self.ui_token}"

    def instructions(self) -> str:
        """What the runtime prints: how to point the CLI at this gateway, and the web page's URL."""
        return "\n".join([
            f"export SPOTRUN_API={self.url}",
            *(f"export {name}={value}" for name, value in self.credentials.env().items()),
            f"# the console (this run only, from this machine): {self.ui_url}",
        ])

    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---------------------------------------------------------- invocations

    def invoke(self, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Call the handler; a crash is API Gateway's 502."""
        request_id = event["requestContext"]["requestId"]
        try:
            response = self.handler(event, lambda_context(self.function, request_id))
            status = int(response.get("statusCode", 200))
            single = {k: str(v) for k, v in (response.get("headers") or {}).items()}
            multi = response.get("multiValueHeaders") or {}
            headers = [(k, str(v)) for k, values in multi.items() if k not in single for v in values]
            headers += list(single.items())
            body = response.get("body") or ""
            raw = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
        except Exception:
            log.exception("the API handler failed (request %s)", request_id)
            return 502, [("Content-Type", "application/json")], b'{"message": "Internal server error"}'
        return status, [*headers, ("x-amzn-RequestId", request_id)], raw

    def console_call(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One widget for the page: the console function invoked with the event CloudWatch would send."""
        if self.console is None:
            return 404, [("Content-Type", "application/json")], b'{"message": "this gateway serves no console"}'
        try:
            event = console_page.page_call(json.loads(body or b"null"))
        except (ValueError, console_page.BadCall) as error:
            return 400, [("Content-Type", "application/json")], json.dumps({"message": str(error)}).encode()
        try:
            answer = self.console(event, lambda_context(invoked_by(resources.DASHBOARD), str(uuid.uuid4())))
        except Exception:
            log.exception("the console function failed")
            return 502, [("Content-Type", "application/json")], b'{"message": "the console function failed"}'
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return 200, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")], text.encode()


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*", re.IGNORECASE)


def _without_token(text: str) -> str:
    """A request line fit for a log: the UI token (a bearer secret) replaced."""
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


def start_gateway(handler: Handler, credentials: LocalCredentials, host: str = "127.0.0.1", port: int = 0,
                  ui_token: str | None = None, console: Handler | None = None) -> Gateway:
    """Serve `handler` behind SigV4 authentication on host:port (0: a free port) in a daemon thread, and the
    console's page with `console` (the console function's handler)."""
    return Gateway(handler, credentials, host, port, ui_token, console=console).start()


def _make_request_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "spotrun-local-gateway"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET  # noqa: N815

        def _serve(self) -> None:
            body = self._read_body()
            if body is None:
                return
            parts = urlsplit(self.path)
            if gateway.serves_page and self.command in ("GET", "HEAD") and parts.path == "/":
                self._reply(200, console_page.PAGE.encode(), [("Content-Type", "text/html; charset=utf-8"),
                                                              *_PAGE_HEADERS.items()])
                return
            if gateway.serves_page and parts.path == "/console/call":
                self._serve_console(parts.query, body)
                return
            credentials, user_arn = gateway.credentials, LOCAL_USER_ARN
            key_id = signing_key_id(self.headers.items())
            if gateway.principals is not None and key_id and key_id != credentials.access_key_id:
                found = gateway.principals(key_id)
                if found is not None:
                    credentials, user_arn = found
            refusal = verify_sigv4(self.command, self.path, self.headers.items(), body, credentials,
                                   now=gateway.clock(), service=gateway.service)
            if refusal is None and gateway.authorize is not None:
                refusal = gateway.authorize(credentials.access_key_id)
            if refusal is not None:
                log.info("refused %s %s: %s", self.command, parts.path, refusal)
                self._json(403, {"message": refusal})
                return
            try:
                text = body.decode("utf-8") if body else None
            except UnicodeDecodeError:
                self._json(400, {"message": "the request body must be UTF-8 text"})
                return
            event = gateway.event(self.command, self.path, self.headers.items(), text,
                                source_ip=self.client_address[0], access_key=credentials.access_key_id,
                                user_arn=user_arn, caller=user_arn.rsplit("/", 1)[-1])
            status, headers, raw = gateway.invoke(event)
            self._reply(status, raw, headers)

        def _serve_console(self, query: str, body: bytes) -> None:
            token = dict(parse_qsl(query)).get("token", "")
            if self.client_address[0] not in _LOOPBACK:
                self._json(403, {"message": "the console answers only to 127.0.0.1"})
                return
            if not token or not hmac.compare_digest(token.encode(), gateway.ui_token.encode()):
                self._json(403, {"message": "missing or wrong console token: open the URL the runtime printed"})
                return
            if self.command != "POST" or not (self.headers.get("Content-Type") or "").startswith("application/json"):
                # A cross-site form cannot send JSON without a preflight, which this gateway never answers.
                self._json(405, {"message": "POST a JSON body"})
                return
            status, headers, raw = gateway.console_call(body)
            self._reply(status, raw, headers)

        def _read_body(self) -> bytes | None:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self.close_connection = True
                self._json(411, {"message": "send a Content-Length, not a chunked body"})
                return None
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self.close_connection = True
                self._json(413, {"message": f"the body must be at most {MAX_BODY_BYTES} bytes"})
                return None
            return self.rfile.read(length) if length else b""

        def _json(self, status: int, value: Any) -> None:
            self._reply(status, json.dumps(value).encode(), [("Content-Type", "application/json"),
                                                             ("Cache-Control", "no-store")])

        def _reply(self, status: int, raw: bytes, headers: list[tuple[str, str]]) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            # The request line carries the web page's ?token=...: logged without it.
            log.debug("%s - %s", self.client_address[0], _without_token(format % args))

    return RequestHandler


# ------------------------------------------------------------------ the web page

_PAGE_HEADERS = {
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'",
}
