"""A local stand-in for a Lambda function URL with AuthType AWS_IAM: the worker-api function's, which the
workers' agents call (`POST /worker/<operation>`).

Each request must carry a valid SigV4 signature for service `lambda` (`gateway.verify_sigv4`, by the signer's
own secret: an instance's role session), and IAM must allow the signer both questions a call through the URL
raises (`spotrun.access.FUNCTION_URL_CALL`: InvokeFunctionUrl with lambda:FunctionUrlAuthType = AWS_IAM, and
InvokeFunction with lambda:InvokedViaFunctionUrl = true), against the policy the local IAM guard holds for its
role; else 403, before the function runs, as Lambda refuses. The function gets the payload format 2.0 event,
with the signer in `requestContext.authorizer.iam`, and its response (statusCode, headers, body) is the answer.
The HTTP plumbing is the users' gateway's (`spotrun_local.gateway.Gateway`), without its console page.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from spotrun_local.gateway import ACCOUNT, Authorize, Gateway, Handler, Principals, new_local_credentials

SERVICE = "lambda"
URL_ID = "localworkerroutes"  # a function URL's id: the first label of its host


def function_url_event(method: str, target: str, headers: Iterable[tuple[str, str]], body: str | None, *,
                       source_ip: str, access_key: str, user_arn: str, caller: str = "",
                       request_id: str | None = None) -> dict[str, Any]:
    """The event (payload format 2.0) Lambda delivers for a request to a function URL with AuthType AWS_IAM."""
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    single: dict[str, str] = {}
    for name, value in headers:  # 2.0 joins a repeated header's values with commas, names lower-cased
        key = name.lower()
        single[key] = f"{single[key]},{value}" if key in single else value
    role_session = user_arn.rsplit("/", 1)[-1]
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": parts.query,
        "headers": single,
        "requestContext": {
            "accountId": ACCOUNT, "apiId": URL_ID, "domainName": single.get("host", ""), "domainPrefix": URL_ID,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": single.get("user-agent", "")},
            "requestId": request_id or str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
            "authorizer": {"iam": {"accessKey": access_key, "accountId": ACCOUNT, "callerId": caller or role_session,
                                   "cognitoIdentity": None, "principalOrgId": None, "userArn": user_arn,
                                   "userId": caller or role_session}},
        },
        "isBase64Encoded": False,
    }
    if parts.query:
        event["queryStringParameters"] = dict(pair.split("=", 1) if "=" in pair else (pair, "")
                                              for pair in parts.query.split("&"))
    if body is not None:
        event["body"] = body
    return event


def function_url(handler: Handler, principals: Principals, authorize: Authorize,
                 function: str = "worker-api") -> Gateway:
    """Serve `function`'s handler at its local function URL (started): signers are `principals` (access key id
    -> their credentials and ARN), each call authorized by `authorize` (access key id -> why IAM refuses)."""
    return Gateway(handler, new_local_credentials(), principals=principals, function=function, service=SERVICE,
                   event=function_url_event, serves_page=False, authorize=authorize,
                   name=f"{function}-function-url").start()
