"""IAM for the local runtime's workers: a WSGI middleware that evaluates their requests before moto.

moto accepts every signed request and evaluates neither conditions, policy variables nor session
tags, so a local agent could read every task's items and checkpoints. `IamGuard` evaluates each
request signed by a *guarded* session (of a role in `role_policies`: registered when anyone assumes
that role through moto's STS, or with `register`) against its role's policy, refuses the way AWS
does, and hands every other request to moto untouched. Authorization only: signatures are not
verified (nor does moto verify them), so it confines clients using their own credentials, not a
process that signs with another key or sends unsigned requests.

The evaluation is a subset of IAM's for identity-based policies:
- an applicable Deny wins, then an applicable Allow, else the request is implicitly denied. A
  statement applies when its Action/NotAction (globs, case-insensitive), its Resource/NotResource
  (globs, case-sensitive) and all its Conditions match;
- policy variables `${key}` (and the escapes `${*}`, `${?}`, `${$}`) take the value of a
  single-valued condition key, matched literally. Without a value a variable matches nothing: the
  Resource or condition using it is false; in NotResource it makes an Allow inapplicable and a
  Deny applicable (it never widens access);
- operators: String(Not)Equals, String(Not)EqualsIgnoreCase, String(Not)Like, Arn(Not)Equals,
  Arn(Not)Like, Bool, Null, with ...IfExists and ForAllValues:/ForAnyValue:. Against a missing key a
  plain operator is false and a Not... one true; ForAllValues over a missing or empty set is true,
  as in IAM (pair it with Null), ForAnyValue false. Numeric, Date, IpAddress and Binary operators
  are not supported: a policy using one is refused when the guard is built;
- condition keys: aws:PrincipalTag/<key>, aws:PrincipalArn (the role), ec2:SourceInstanceARN,
  aws:ResourceTag/<key> (from `resource_tags`), aws:ARN (EC2 instance actions), dynamodb:LeadingKeys,
  s3:prefix (listings), aws:RequestTag/<key> and aws:TagKeys (AssumeRole); any other key is missing.
Not modelled: resource-based policies, boundaries, session policies, SCPs, transitive tags, expiry.

Requests become (action, resource, context) questions, all of which must be allowed: see `_dynamodb`
(per item, per table of a batch, per transaction entry), `_s3` (DeleteObjects: per key; CopyObject:
also s3:GetObject on the source), `_sqs` and `_ec2` (per instance); any other service's request is
`<service>:<operation>` on `*`, and sts:GetCallerIdentity is always allowed. A guarded request the
guard cannot read (a malformed body, a DynamoDB key without `partition_key`, a Query without a
partition key equality) is refused, and S3 requests it does not map (?tagging, ?acl, ...) get an
action name, `s3:Unmapped(...)`, that only `s3:*` allows.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger("spotrun.local.iam")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Context = dict[str, list[str]]  # condition key (lower case) -> its values


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


@dataclass(frozen=True)
class AccessRequest:
    """One question a request raises: may the caller perform `action` on `resource`?"""

    action: str
    resource: str
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)
    unreadable: str | None = None  # why the guard could not tell what the request touches (always refused)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # worded to follow "User: ... is not authorized to perform: ... on resource: ..."


# --- evaluation --------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_STRING_OPERATORS = {  # operator -> (wildcards, ignore case, negated)
    "StringEquals": (False, False, False), "StringNotEquals": (False, False, True),
    "StringEqualsIgnoreCase": (False, True, False), "StringNotEqualsIgnoreCase": (False, True, True),
    "StringLike": (True, False, False), "StringNotLike": (True, False, True),
    "ArnEquals": (True, False, False), "ArnLike": (True, False, False),  # both match globs in IAM
    "ArnNotEquals": (True, False, True), "ArnNotLike": (True, False, True),
    "Bool": (False, True, False),
}


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str | bool):
        value = [value]
    return [str(item).lower() if isinstance(item, bool) else str(item) for item in value]


def _statements(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def check_supported(policy: Mapping[str, Any]) -> None:
    """Raises ValueError for a condition operator this evaluator would get wrong."""
    for statement in _statements(policy):
        for operator in statement.get("Condition", {}):
            qualifier, _, name = operator.rpartition(":")
            if qualifier not in ("", "ForAllValues", "ForAnyValue") or \
                    name.removesuffix("IfExists") not in {*_STRING_OPERATORS, "Null"}:
                raise ValueError(f"the local IAM guard does not support the condition operator {operator}")


def _resolve(variable: str, context: Context) -> str | None:
    if variable in ("*", "?", "$"):
        return variable
    values = context.get(variable.lower(), [])
    return values[0] if len(values) == 1 else None


def _compile(pattern: str, context: Context, *, wildcards: bool, ignore_case: bool) -> re.Pattern[str] | None:
    """The pattern as a regex with its variables filled in, or None when one has no value."""

    def text(part: str) -> str:
        if not wildcards:
            return re.escape(part)
        return "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in part)

    parts: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(pattern):
        value = _resolve(match.group(1), context)
        if value is None:
            return None
        parts += [text(pattern[position:match.start()]), re.escape(value)]  # a value is never a wildcard
        position = match.end()
    parts.append(text(pattern[position:]))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _matches(patterns: Any, value: str, context: Context, *, ignore_case: bool) -> bool | None:
    """Whether a pattern matches the value; None when none does but one could not be resolved."""
    unresolved = False
    for pattern in _as_list(patterns):
        regex = _compile(pattern, context, wildcards=True, ignore_case=ignore_case)
        if regex is None:
            unresolved = True
        elif regex.fullmatch(value):
            return True
    return None if unresolved else False


def _condition_holds(operator: str, key: str, expected: Any, context: Context) -> bool:
    qualifier, _, name = operator.rpartition(":")
    if_exists, name = name.endswith("IfExists"), name.removesuffix("IfExists")
    values = context.get(key.lower(), [])
    if name == "Null":  # "true": the key must be missing; "false": it must be present
        return str(not values).lower() in (value.lower() for value in _as_list(expected))
    wildcards, ignore_case, negated = _STRING_OPERATORS[name]
    compiled = [_compile(value, context, wildcards=wildcards, ignore_case=ignore_case) for value in _as_list(expected)]
    patterns = [pattern for pattern in compiled if pattern is not None]
    if len(patterns) < len(compiled):
        return False  # a policy variable without a value makes the condition false
    if not values:
        if if_exists:
            return True
        return {"ForAllValues": True, "ForAnyValue": False}.get(qualifier, negated)

    def passes(value: str) -> bool:
        return any(pattern.fullmatch(value) for pattern in patterns) != negated

    if qualifier == "ForAnyValue":
        return any(map(passes, values))
    if qualifier == "ForAllValues" or negated:  # a Not... operator must hold for every value
        return all(map(passes, values))
    return any(map(passes, values))


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Context) -> bool:
    deny = statement.get("Effect") == "Deny"
    for positive, negative, value, ignore_case in (("Action", "NotAction", action, True),
                                                   ("Resource", "NotResource", resource, False)):
        if positive in statement:
            if not _matches(statement[positive], value, context, ignore_case=ignore_case):
                return False
        elif negative in statement:
            matched = _matches(statement[negative], value, context, ignore_case=ignore_case)
            if matched or (matched is None and not deny):  # an unresolved exclusion never widens access
                return False
        else:
            return False
    return all(_condition_holds(operator, key, expected, context)
               for operator, entries in statement.get("Condition", {}).items()
               for key, expected in entries.items())


def evaluate(policy: Mapping[str, Any], action: str, resource: str,
             context: Mapping[str, Sequence[str] | str] | None = None) -> Decision:
    """IAM's decision (the subset in the module docstring) for one action on one resource."""
    normalized = {key.lower(): _as_list(values) for key, values in (context or {}).items()}
    allowed_by: str | None = None
    for number, statement in enumerate(_statements(policy)):
        if not _applies(statement, action, resource, normalized):
            continue
        name = statement.get("Sid") or f"#{number}"
        if statement.get("Effect") == "Deny":
            return Decision(False, f"with an explicit deny in an identity-based policy (statement {name})")
        if statement.get("Effect") == "Allow":
            allowed_by = allowed_by or name
    if allowed_by:
        return Decision(True, f"allowed by statement {allowed_by}")
    return Decision(False, f"because no identity-based policy allows the {action} action")


# --- reading requests ---------------------------------------------------------------------------

_FORM = "application/x-www-form-urlencoded"


class _Unreadable(Exception):
    pass


class _HttpRequest:
    """The parts of a WSGI request the guard reads; a body it reads is handed back to moto intact."""

    def __init__(self, environ: dict[str, Any]):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.query = _first_values(environ.get("QUERY_STRING", ""))
        self._body: bytes | None = None

    def header(self, name: str) -> str:
        return str(self.environ.get("HTTP_" + name.upper().replace("-", "_"), ""))

    def _content_length(self) -> int | None:
        length = str(self.environ.get("CONTENT_LENGTH") or "")
        return int(length) if length.isdigit() else None

    def body(self) -> bytes:
        if self._body is None:
            stream, length = self.environ["wsgi.input"], self._content_length()
            if length is not None:
                self._body = stream.read(length)
            else:  # chunked (the server dechunks and marks the end) or no body at all
                self._body = stream.read() if self.environ.get("wsgi.input_terminated") else b""
            self.environ["wsgi.input"] = io.BytesIO(self._body)
            self.environ["CONTENT_LENGTH"] = str(len(self._body))
        return self._body

    def json(self) -> dict[str, Any]:
        document = json.loads(self.body() or b"{}")
        if not isinstance(document, dict):
            raise _Unreadable("the body is not a JSON object")
        return document

    def params(self) -> dict[str, str]:
        """Query protocol parameters: the query string and a form-encoded body."""
        params = dict(self.query)
        if str(self.environ.get("CONTENT_TYPE", "")).startswith(_FORM):
            params.update(_first_values(self.body().decode("utf-8")))
        return params

    def drain(self) -> None:
        """Reads away a body moto will not read, so that the client sees the refusal, not a reset connection."""
        remaining = self._content_length() if self._body is None else 0
        if remaining is None and self.environ.get("wsgi.input_terminated"):  # chunked: up to its end
            remaining = 1 << 62
        while remaining and (chunk := self.environ["wsgi.input"].read(min(remaining, 1 << 20))):
            remaining -= len(chunk)


def _first_values(query: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/,\s]*/[^/,\s]*/([^/,\s]+)/aws4_request")


def _caller(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(access key id, signing service) of a signed request: SigV4 header or presigned URL, or S3's SigV2."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    if match := _CREDENTIAL.search(authorization):
        return match.group(1), match.group(2).lower()
    query = _first_values(environ.get("QUERY_STRING", ""))
    scope = query.get("X-Amz-Credential", "").split("/")
    if len(scope) == 5:
        return scope[0], scope[3].lower()
    if authorization.startswith("AWS "):  # SigV2, which only S3 still accepts
        return authorization[4:].partition(":")[0], "s3"
    if "AWSAccessKeyId" in query:
        return query["AWSAccessKeyId"], "s3"
    return None


def _operation(request: _HttpRequest) -> str:
    target = request.header("X-Amz-Target")
    if target:
        return target.rpartition(".")[2]
    return request.params().get("Action") or f"Unmapped({request.method} {request.environ.get('PATH_INFO', '')})"


# DynamoDB --------------------------------------------------------------------------------------

_EQUALITY = re.compile(r"(?P<name>#?[\w.-]+)\s*=\s*(?P<value>:\w+)")
_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _scalar(attribute: Any) -> str:
    """The value of a key AttributeValue: {"S": "x"} -> "x"."""
    ((_, value),) = attribute.items()
    if not isinstance(value, str):
        raise _Unreadable("a key attribute is not a string, number or binary")
    return value


def _dynamodb(request: _HttpRequest, region: str, account: str, partition_key: str) -> list[AccessRequest]:
    operation, body = _operation(request), request.json()

    def table(name: str) -> str:
        return name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    def leading_keys(keys: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
        values: list[str] = []
        for key in keys:
            if partition_key not in key:
                raise _Unreadable(f"a key without the partition key attribute {partition_key!r}")
            values.append(_scalar(key[partition_key]))
        return {"dynamodb:LeadingKeys": values}

    action = f"dynamodb:{operation}"
    if operation in ("GetItem", "UpdateItem", "DeleteItem", "PutItem"):
        key = body["Item"] if operation == "PutItem" else body["Key"]
        return [AccessRequest(action, table(body["TableName"]), leading_keys([key]))]
    if operation == "Query":
        index = body.get("IndexName")
        resource = table(body["TableName"]) + (f"/index/{index}" if index else "")
        values = _query_partition_values(body, partition_key, on_index=bool(index))
        return [AccessRequest(action, resource, {"dynamodb:LeadingKeys": values})]
    if operation == "BatchGetItem":
        return [AccessRequest(action, table(name), leading_keys(reads["Keys"]))
                for name, reads in body["RequestItems"].items()]
    if operation == "BatchWriteItem":
        return [AccessRequest(action, table(name), leading_keys(
                    write["PutRequest"]["Item"] if "PutRequest" in write else write["DeleteRequest"]["Key"]
                    for write in writes))
                for name, writes in body["RequestItems"].items()]
    if operation in ("TransactWriteItems", "TransactGetItems"):  # authorized per entry, as its single-item action
        requests: list[AccessRequest] = []
        for entry in body["TransactItems"]:
            ((kind, item),) = entry.items()
            key = item["Item"] if kind == "Put" else item["Key"]
            requests.append(AccessRequest(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", table(item["TableName"]),
                                          leading_keys([key])))
        return requests
    resource = table(body["TableName"]) if "TableName" in body else "*"
    if "IndexName" in body:
        resource += f"/index/{body['IndexName']}"
    return [AccessRequest(action, resource)]  # Scan and the rest: no dynamodb:LeadingKeys


def _query_partition_values(body: Mapping[str, Any], partition_key: str, *, on_index: bool) -> list[str]:
    """The partitions a Query reads: the values it compares the partition key with.

    On an index, whose key names the guard does not know, every equality counts: a sort key
    equality put first must not stand in for the partition key it reads."""
    names, values = body.get("ExpressionAttributeNames", {}), body.get("ExpressionAttributeValues", {})
    equalities = [(names.get(match["name"], match["name"]), values[match["value"]])
                  for match in _EQUALITY.finditer(body.get("KeyConditionExpression", ""))]
    equalities += [(name, condition["AttributeValueList"][0])  # the legacy KeyConditions parameter
                   for name, condition in body.get("KeyConditions", {}).items()
                   if condition.get("ComparisonOperator") == "EQ"]
    found = [_scalar(value) for name, value in equalities if on_index or name == partition_key]
    if not found:
        raise _Unreadable("a Query without an equality on the partition key")
    return found


# S3 --------------------------------------------------------------------------------------------

_VIRTUAL_HOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*?)\.(?:s3[.-]|localhost)", re.IGNORECASE)
_LIST_PARAMETERS = {"list-type", "prefix", "delimiter", "max-keys", "continuation-token", "start-after",
                    "encoding-type", "fetch-owner", "marker", "key-marker", "version-id-marker",
                    "upload-id-marker", "max-uploads"}
# Parameters that select no subresource: signing, response overrides, versions and parts.
_PLAIN_PARAMETER = re.compile(r"^(x-amz-|x-id$|awsaccesskeyid$|signature$|expires$|response-|versionid$|partnumber$)",
                              re.IGNORECASE)
_BUCKET_ACTIONS = {("GET", ""): "ListBucket", ("HEAD", ""): "ListBucket",
                   ("GET", "uploads"): "ListBucketMultipartUploads", ("GET", "versions"): "ListBucketVersions",
                   ("GET", "location"): "GetBucketLocation", ("PUT", ""): "CreateBucket",
                   ("DELETE", ""): "DeleteBucket"}


def _s3_location(request: _HttpRequest) -> tuple[str, str]:
    """(bucket, key) from a path-style (/bucket/key) or virtual-hosted (bucket.localhost/key) URL."""
    raw = str(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "")
    if raw:  # undecoded, so that an encoded '?' or '%' in a key survives
        raw = raw.encode("latin-1").decode("utf-8", "replace").partition("?")[0]
        path = unquote(urlsplit(raw).path if raw.startswith("http") else raw)
    else:
        path = str(request.environ.get("PATH_INFO", "")).encode("latin-1").decode("utf-8", "replace")
    virtual = _VIRTUAL_HOST.match(request.header("Host"))
    if virtual:
        return virtual["bucket"], path[1:]
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key


def _s3(request: _HttpRequest) -> list[AccessRequest]:
    bucket, key = _s3_location(request)
    method, query = request.method, request.query
    if not bucket:
        return [AccessRequest("s3:ListAllMyBuckets", "*")]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if not key:
        return _s3_bucket(request, bucket_arn)
    version = "Version" if "versionId" in query else ""
    subresources = sorted(name for name in query if not _PLAIN_PARAMETER.match(name))
    if "uploadId" in query:  # UploadPart(Copy) and CompleteMultipartUpload need s3:PutObject
        action = {"GET": "ListMultipartUploadParts", "DELETE": "AbortMultipartUpload"}.get(method, "PutObject")
    elif method == "POST" and subresources == ["uploads"]:
        action = "PutObject"
    elif subresources:  # ?tagging, ?acl, ?restore...: named so that only s3:* (or *) allows them
        action = f"Unmapped({method} ?{'&'.join(subresources)})"
    else:
        action = {"GET": f"GetObject{version}", "HEAD": f"GetObject{version}", "PUT": "PutObject",
                  "DELETE": f"DeleteObject{version}"}.get(method, f"Unmapped({method})")
    requests = [AccessRequest(f"s3:{action}", f"{bucket_arn}/{key}")]
    if method == "PUT" and (source := request.header("X-Amz-Copy-Source")):
        source_path, _, source_query = source.partition("?")
        source_bucket, _, source_key = unquote(source_path).lstrip("/").partition("/")
        source_action = "s3:GetObjectVersion" if "versionId" in _first_values(source_query) else "s3:GetObject"
        requests.append(AccessRequest(source_action, f"arn:aws:s3:::{source_bucket}/{source_key}"))
    return requests


def _s3_bucket(request: _HttpRequest, bucket_arn: str) -> list[AccessRequest]:
    subresources = sorted(name for name in request.query
                          if name not in _LIST_PARAMETERS and not _PLAIN_PARAMETER.match(name))
    kind = "&".join(subresources)
    if request.method == "POST" and kind == "delete":  # DeleteObjects: s3:DeleteObject on each key
        requests: list[AccessRequest] = []
        for entry in ElementTree.fromstring(request.body()).iter():
            if entry.tag.rpartition("}")[2] == "Object":
                fields = {child.tag.rpartition("}")[2]: child.text or "" for child in entry}
                action = "s3:DeleteObjectVersion" if fields.get("VersionId") else "s3:DeleteObject"
                requests.append(AccessRequest(action, f"{bucket_arn}/{fields['Key']}"))
        if not requests:
            raise _Unreadable("a DeleteObjects request without objects")
        return requests
    action = _BUCKET_ACTIONS.get((request.method, kind), f"Unmapped({request.method} ?{kind})")
    listing = request.method == "GET" and kind in ("", "versions")
    return [AccessRequest(f"s3:{action}", bucket_arn,
                          {"s3:prefix": [request.query.get("prefix", "")]} if listing else {})]


# SQS, EC2, others --------------------------------------------------------------------------------

_SQS_BATCHES = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
_EC2_INSTANCE_ACTIONS = {"TerminateInstances", "StopInstances", "StartInstances", "RebootInstances",
                         "ModifyInstanceAttribute", "ModifyInstanceMetadataOptions", "GetConsoleOutput",
                         "MonitorInstances", "UnmonitorInstances"}
_INSTANCE_ID = re.compile(r"InstanceId(\.\d+)?")


def _sqs(request: _HttpRequest, region: str, account: str) -> list[AccessRequest]:
    operation = _operation(request)
    params = request.json() if request.header("X-Amz-Target") else request.params()
    if operation in ("GetQueueUrl", "CreateQueue"):
        queue = params.get("QueueName", "")
    else:  # the query protocol may name the queue by the request's path instead
        queue_url = params.get("QueueUrl") or str(request.environ.get("PATH_INFO", ""))
        queue = urlsplit(queue_url).path.rstrip("/").rpartition("/")[2]
    resource = f"arn:aws:sqs:{region}:{account}:{queue}" if queue else "*"
    return [AccessRequest(f"sqs:{_SQS_BATCHES.get(operation, operation)}", resource)]


def _ec2(request: _HttpRequest, region: str, account: str) -> list[AccessRequest]:
    params = request.params()
    action = f"ec2:{params['Action']}"
    instances = [f"arn:aws:ec2:{region}:{account}:instance/{value}"
                 for name, value in params.items() if _INSTANCE_ID.fullmatch(name)]
    if params["Action"] not in _EC2_INSTANCE_ACTIONS or not instances:
        return [AccessRequest(action, "*")]
    return [AccessRequest(action, arn, {"aws:ARN": [arn]}) for arn in instances]


# --- refusals -------------------------------------------------------------------------------------

def _refusal(service: str, request: _HttpRequest, message: str) -> tuple[str, list[tuple[str, str]], bytes]:
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

_STS_TAG = re.compile(r"Tags\.member\.(\d+)\.(Key|Value)")


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
        self._uses_resource_tags = {role for role, policy in role_policies.items()
                                    if "aws:resourcetag/" in json.dumps(policy).lower()}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def add_role(self, role_arn: str, policy: dict[str, Any]) -> None:
        """Guard sessions of one more role (the local runtime adds its roles once moto has them)."""
        check_supported(policy)
        with self._lock:
            self._policies[role_arn] = policy
            if "aws:resourcetag/" in json.dumps(policy).lower():
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

    def wrap(self, app: WsgiApp) -> WsgiApp:
        """The WSGI app that guards `app` (moto's server)."""

        def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            access_key_id, service = _caller(environ) or ("", "")
            session = self.session(access_key_id)
            unsigned_form = not service and str(environ.get("CONTENT_TYPE", "")).startswith(_FORM)
            if service == "sts" or unsigned_form:  # unsigned: maybe AssumeRoleWithWebIdentity or ...WithSAML
                return self._sts(app, _HttpRequest(environ), start_response, session)
            if session is None:
                return app(environ, start_response)
            request = _HttpRequest(environ)
            denial = self._first_denial(session, self._access_requests(service, request))
            if denial:
                return self._refuse(denial, service, request, start_response)
            return app(environ, start_response)

        return guarded

    def _access_requests(self, service: str, request: _HttpRequest) -> list[AccessRequest]:
        try:
            if service == "dynamodb":
                return _dynamodb(request, self.region, self.account, self.partition_key)
            if service == "s3":
                return _s3(request)
            if service == "sqs":
                return _sqs(request, self.region, self.account)
            if service == "ec2":
                return _ec2(request, self.region, self.account)
            return [AccessRequest(f"{service}:{_operation(request)}", "*")]
        except (_Unreadable, LookupError, TypeError, AttributeError, ValueError, ElementTree.ParseError) as error:
            action = f"{service}:{request.header('X-Amz-Target').rpartition('.')[2] or request.method}"
            return [AccessRequest(action, "*", unreadable=str(error) or type(error).__name__)]

    def _first_denial(self, session: Session, requests: Iterable[AccessRequest]) -> Denial | None:
        for request in requests:
            decision = self.authorize(session, request)
            if not decision.allowed:
                return Denial(session.principal_arn, request.action, request.resource, decision.reason)
        return None

    def _refuse(self, denial: Denial, service: str, request: _HttpRequest,
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

    def _sts(self, app: WsgiApp, request: _HttpRequest, start_response: StartResponse,
             session: Session | None) -> Iterable[bytes]:
        params = request.params()
        action = params.get("Action", "")
        if action == "GetCallerIdentity":  # needs no permission in IAM
            return app(request.environ, start_response)
        role_arn = params.get("RoleArn", "")
        parts: dict[int, dict[str, str]] = {}
        for name, value in params.items():
            if match := _STS_TAG.fullmatch(name):
                parts.setdefault(int(match[1]), {})[match[2]] = value
        tags = {part["Key"]: part.get("Value", "") for _, part in sorted(parts.items()) if "Key" in part}
        if session is not None:
            if action == "AssumeRole":
                context = {f"aws:RequestTag/{key}": [value] for key, value in tags.items()}
                context["aws:TagKeys"] = list(tags)
                requests = [AccessRequest("sts:AssumeRole", role_arn, context)]
                requests += [AccessRequest("sts:TagSession", role_arn, context)] if tags else []
            else:
                requests = [AccessRequest(f"sts:{action or request.method}", "*")]
            if denial := self._first_denial(session, requests):
                return self._refuse(denial, "sts", request, start_response)
        if action in ("AssumeRoleWithWebIdentity", "AssumeRoleWithSAML") and role_arn in self._policies:
            denial = Denial("anonymous", f"sts:{action}", role_arn, "because the local IAM guard hands out the "
                            "sessions of its roles through AssumeRole only")
            return self._refuse(denial, "sts", request, start_response)
        if action == "AssumeRole" and role_arn in self._policies:
            return self._assume_guarded_role(app, request, start_response, role_arn,
                                             params.get("RoleSessionName", ""), tags)
        return app(request.environ, start_response)

    def _assume_guarded_role(self, app: WsgiApp, request: _HttpRequest, start_response: StartResponse,
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
