"""What a request to AWS amounts to in IAM's terms: the (action, resource, context) questions it raises.

Each translator reads one service's wire protocol from a WSGI request (`HttpRequest`, which hands
a body it read back intact) and returns every question that must be allowed for the request to be:
- DynamoDB (`dynamodb_requests`): per item with dynamodb:LeadingKeys (the partition key values), per
  table of a batch, per transaction entry as its single-item action; a Query by the equalities on
  its partition key (on an index: every equality). Single-item requests (and transaction entries)
  also bring dynamodb:Attributes, every top-level attribute name the request uses (its key, item,
  projection, update and condition expressions, legacy parameters: IAM's documentation leaves open
  whether a condition's names count, so here they do, the stricter reading), and
  dynamodb:ReturnValues when the request sets it;
- S3 (`s3_requests`): per object, per key of a DeleteObjects, s3:GetObject on a CopyObject's source,
  s3:prefix for listings; a subresource it does not map (?tagging, ?acl, ...) becomes an action
  `s3:Unmapped(...)` that only `s3:*` allows;
- SQS (`sqs_requests`): the queue by name or URL, batch operations as their single action;
- EC2 (`ec2_requests`): instance actions per instance with aws:ARN, anything else on `*`;
- CloudWatch Logs (`logs_requests`): stream actions (PutLogEvents, GetLogEvents) on the log stream,
  group actions on the log group, listing and anything without a group on `*`;
- STS (`sts_call`): AssumeRole (with sts:TagSession and aws:RequestTag/aws:TagKeys when it tags the
  session); sts:GetCallerIdentity raises no question (IAM allows it to everyone);
- any other service: `<service>:<operation>` on `*`.
A request whose translation fails (a malformed body, a DynamoDB key without the partition key, a
Query without a partition key equality) becomes one question marked `unreadable`, always refused.
"""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class AccessRequest:
    """One question a request raises: may the caller perform `action` on `resource`?"""

    action: str
    resource: str
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)
    unreadable: str | None = None  # why the guard could not tell what the request touches (always refused)


# --- reading a WSGI request ----------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


class Unreadable(Exception):
    pass


class HttpRequest:
    """The parts of a WSGI request the guard reads; a body it reads is handed back to moto intact."""

    def __init__(self, environ: dict[str, Any]):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.query = first_values(environ.get("QUERY_STRING", ""))
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
            raise Unreadable("the body is not a JSON object")
        return document

    def params(self) -> dict[str, str]:
        """Query protocol parameters: the query string and a form-encoded body."""
        params = dict(self.query)
        if str(self.environ.get("CONTENT_TYPE", "")).startswith(FORM):
            params.update(first_values(self.body().decode("utf-8")))
        return params

    def drain(self) -> None:
        """Reads away a body moto will not read, so that the client sees the refusal, not a reset connection."""
        remaining = self._content_length() if self._body is None else 0
        if remaining is None and self.environ.get("wsgi.input_terminated"):  # chunked: up to its end
            remaining = 1 << 62
        while remaining and (chunk := self.environ["wsgi.input"].read(min(remaining, 1 << 20))):
            remaining -= len(chunk)


def first_values(query: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/,\s]*/[^/,\s]*/([^/,\s]+)/aws4_request")


def caller(environ: dict[str, Any]) -> tuple[str, str] | None:
    """(access key id, signing service) of a signed request: SigV4 header or presigned URL, or S3's SigV2."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    if match := _CREDENTIAL.search(authorization):
        return match.group(1), match.group(2).lower()
    query = first_values(environ.get("QUERY_STRING", ""))
    scope = query.get("X-Amz-Credential", "").split("/")
    if len(scope) == 5:
        return scope[0], scope[3].lower()
    if authorization.startswith("AWS "):  # SigV2, which only S3 still accepts
        return authorization[4:].partition(":")[0], "s3"
    if "AWSAccessKeyId" in query:
        return query["AWSAccessKeyId"], "s3"
    return None


def operation_of(request: HttpRequest) -> str:
    target = request.header("X-Amz-Target")
    if target:
        return target.rpartition(".")[2]
    return request.params().get("Action") or f"Unmapped({request.method} {request.environ.get('PATH_INFO', '')})"


# DynamoDB --------------------------------------------------------------------------------------

_EQUALITY = re.compile(r"(?P<name>#?[\w.-]+)\s*=\s*(?P<value>:\w+)")
# A top-level name in an expression: not a path's later part (after '.'), a value (':v') or a function.
_TOP_LEVEL_NAME = re.compile(r"(?<![\w.#:])(#?[A-Za-z_]\w*)(?!\w)(?!\s*\()")
_EXPRESSION_WORDS = frozenset({"SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN"})
_EXPRESSIONS = ("UpdateExpression", "ConditionExpression", "ProjectionExpression")
_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                     "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _scalar(attribute: Any) -> str:
    """The value of a key AttributeValue: {"S": "x"} -> "x"."""
    ((_, value),) = attribute.items()
    if not isinstance(value, str):
        raise Unreadable("a key attribute is not a string, number or binary")
    return value


def dynamodb_requests(request: HttpRequest, region: str, account: str, partition_key: str) -> list[AccessRequest]:
    operation, body = operation_of(request), request.json()

    def table(name: str) -> str:
        return name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"

    def leading_keys(keys: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
        values: list[str] = []
        for key in keys:
            if partition_key not in key:
                raise Unreadable(f"a key without the partition key attribute {partition_key!r}")
            values.append(_scalar(key[partition_key]))
        return {"dynamodb:LeadingKeys": values}

    action = f"dynamodb:{operation}"
    if operation in ("GetItem", "UpdateItem", "DeleteItem", "PutItem"):
        key = body["Item"] if operation == "PutItem" else body["Key"]
        return [AccessRequest(action, table(body["TableName"]), {**leading_keys([key]), **item_context(body, key)})]
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
                                          {**leading_keys([key]), **item_context(item, key)}))
        return requests
    resource = table(body["TableName"]) if "TableName" in body else "*"
    if "IndexName" in body:
        resource += f"/index/{body['IndexName']}"
    return [AccessRequest(action, resource)]  # Scan and the rest: no dynamodb:LeadingKeys


def item_context(body: Mapping[str, Any], key: Mapping[str, Any]) -> dict[str, list[str]]:
    """dynamodb:Attributes (sorted) and dynamodb:ReturnValues of a single-item request."""
    names = body.get("ExpressionAttributeNames", {})
    found = set(key)
    for legacy in ("AttributesToGet", "AttributeUpdates", "Expected"):
        found.update(body.get(legacy) or ())
    for field_name in _EXPRESSIONS:
        for match in _TOP_LEVEL_NAME.finditer(body.get(field_name) or ""):
            token = match.group(1)
            if token.upper() in _EXPRESSION_WORDS:
                continue
            if token.startswith("#"):
                if token not in names:
                    raise Unreadable(f"{field_name} uses {token}, which ExpressionAttributeNames does not define")
                token = names[token]
            found.add(token)
    context = {"dynamodb:Attributes": sorted(found)}
    if body.get("ReturnValues"):
        context["dynamodb:ReturnValues"] = [str(body["ReturnValues"])]
    return context


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
        raise Unreadable("a Query without an equality on the partition key")
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


def s3_location(request: HttpRequest) -> tuple[str, str]:
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


def s3_requests(request: HttpRequest) -> list[AccessRequest]:
    bucket, key = s3_location(request)
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
        source_action = "s3:GetObjectVersion" if "versionId" in first_values(source_query) else "s3:GetObject"
        requests.append(AccessRequest(source_action, f"arn:aws:s3:::{source_bucket}/{source_key}"))
    return requests


def _s3_bucket(request: HttpRequest, bucket_arn: str) -> list[AccessRequest]:
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
            raise Unreadable("a DeleteObjects request without objects")
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


def sqs_requests(request: HttpRequest, region: str, account: str) -> list[AccessRequest]:
    operation = operation_of(request)
    params = request.json() if request.header("X-Amz-Target") else request.params()
    if operation in ("GetQueueUrl", "CreateQueue"):
        queue = params.get("QueueName", "")
    else:  # the query protocol may name the queue by the request's path instead
        queue_url = params.get("QueueUrl") or str(request.environ.get("PATH_INFO", ""))
        queue = urlsplit(queue_url).path.rstrip("/").rpartition("/")[2]
    resource = f"arn:aws:sqs:{region}:{account}:{queue}" if queue else "*"
    return [AccessRequest(f"sqs:{_SQS_BATCHES.get(operation, operation)}", resource)]


def ec2_requests(request: HttpRequest, region: str, account: str) -> list[AccessRequest]:
    params = request.params()
    action = f"ec2:{params['Action']}"
    instances = [f"arn:aws:ec2:{region}:{account}:instance/{value}"
                 for name, value in params.items() if _INSTANCE_ID.fullmatch(name)]
    if params["Action"] not in _EC2_INSTANCE_ACTIONS or not instances:
        return [AccessRequest(action, "*")]
    return [AccessRequest(action, arn, {"aws:ARN": [arn]}) for arn in instances]


# Actions whose resource is a log stream (the rest name the log group, when they name one).
_LOG_STREAM_ACTIONS = {"PutLogEvents", "GetLogEvents"}


def logs_requests(request: HttpRequest, region: str, account: str) -> list[AccessRequest]:
    operation, body = operation_of(request), request.json()
    group = body.get("logGroupName")
    if group is None and "logGroupIdentifier" in body:  # a name or an ARN
        group = str(body["logGroupIdentifier"]).removesuffix(":*").rpartition(":log-group:")[2] or None
    if not isinstance(group, str) or not group:
        return [AccessRequest(f"logs:{operation}", "*")]
    resource = f"arn:aws:logs:{region}:{account}:log-group:{group}"
    if operation in _LOG_STREAM_ACTIONS:
        stream = body.get("logStreamName")
        if not isinstance(stream, str) or not stream:
            raise Unreadable(f"{operation} without a log stream name")
        resource += f":log-stream:{stream}"
    return [AccessRequest(f"logs:{operation}", resource)]


def access_requests(service: str, request: HttpRequest, *, region: str, account: str,
                    partition_key: str = "pk") -> list[AccessRequest]:
    """Every question `request` (signed for `service`) raises; one marked unreadable if it cannot be read."""
    try:
        if service == "dynamodb":
            return dynamodb_requests(request, region, account, partition_key)
        if service == "s3":
            return s3_requests(request)
        if service == "sqs":
            return sqs_requests(request, region, account)
        if service == "ec2":
            return ec2_requests(request, region, account)
        if service == "sts":
            return sts_call(request).requests
        if service == "logs":
            return logs_requests(request, region, account)
        return [AccessRequest(f"{service}:{operation_of(request)}", "*")]
    except (Unreadable, LookupError, TypeError, AttributeError, ValueError, ElementTree.ParseError) as error:
        action = f"{service}:{request.header('X-Amz-Target').rpartition('.')[2] or request.method}"
        return [AccessRequest(action, "*", unreadable=str(error) or type(error).__name__)]


# STS ---------------------------------------------------------------------------------------------

_STS_TAG = re.compile(r"Tags\.member\.(\d+)\.(Key|Value)")


@dataclass(frozen=True)
class StsCall:
    action: str
    role_arn: str  # AssumeRole...: the role asked for
    session_name: str
    tags: dict[str, str]  # the session tags asked for
    requests: list[AccessRequest]  # what the caller must be allowed


def sts_call(request: HttpRequest) -> StsCall:
    params = request.params()
    action = params.get("Action", "")
    role_arn = params.get("RoleArn", "")
    parts: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        if match := _STS_TAG.fullmatch(name):
            parts.setdefault(int(match[1]), {})[match[2]] = value
    tags = {part["Key"]: part.get("Value", "") for _, part in sorted(parts.items()) if "Key" in part}
    if action == "GetCallerIdentity":  # needs no permission in IAM
        requests = []
    elif action == "AssumeRole":
        context = {f"aws:RequestTag/{key}": [value] for key, value in tags.items()}
        context["aws:TagKeys"] = list(tags)
        requests = [AccessRequest("sts:AssumeRole", role_arn, context)]
        requests += [AccessRequest("sts:TagSession", role_arn, context)] if tags else []
    else:
        requests = [AccessRequest(f"sts:{action or request.method}", "*")]
    return StsCall(action, role_arn, params.get("RoleSessionName", ""), tags, requests)
