import json, time
from spotrun.handlers import api
from tests.support import api_event

def call(cp, context, method, path, body=None, **query):
    answer = api.handler(api_event(method, path, body, query or None), context, control=cp)
    return answer["statusCode"], answer["body"]

def items(cp):
    t = cp.store.client.scan(TableName=cp.store.table)["Items"]
    return [i["pk"]["S"] for i in t]

def test_big_inputs(cp, context):
    uri = "s3://bucket-name/" + "a" * 1024
    spec = {"name": "x", "command": "x", "tasks": 3, "inputs": [uri] * 1000}
    t = time.time()
    status, body = call(cp, context, "POST", "/jobs", spec)
    print(status, body[:500], time.time() - t)
    print(sorted(set(items(cp)))[:20], len(items(cp)))

def test_big_argv(cp, context):
    spec = {"name": "x", "command": ["a" * 16384] * 256}
    status, body = call(cp, context, "POST", "/jobs", spec)
    print(status, body[:500])
    print(sorted(set(items(cp)))[:20], len(items(cp)))

def test_many_tasks(cp, context):
    t = time.time()
    status, body = call(cp, context, "POST", "/jobs", {"name": "x", "command": "x", "tasks": 5000})
    print(status, body[:300], time.time() - t)
