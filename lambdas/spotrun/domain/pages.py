"""The page tokens the API hands out: the store's cursor, sealed with an HMAC so that a client can only
give back a token it was given, for the listing it was given for.

A token is `1.<cursor, base64url>.<tag, base64url>`, the tag an HMAC-SHA256 (first 16 bytes) under the
deployment's page-token key over the version, the listing's scope (which route, job and filter) and
the cursor. Anything else, a tampered token, or a token of another listing is a `BadPageToken` (400):
a forged cursor never reaches the store's key conditions (it used to crash the query: a 502).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

VERSION = "1"
TAG_BYTES = 16
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class BadPageToken(ValueError):
    def __init__(self) -> None:
        super().__init__("the page token is not one this API gave out")


def seal(cursor: str, scope: str, key: bytes) -> str:
    payload = _b64(cursor.encode())
    return f"{VERSION}.{payload}.{_b64(_tag(key, scope, payload))}"


def unseal(token: str, scope: str, key: bytes) -> str:
    """The cursor sealed in `token` for `scope`; BadPageToken for anything else."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise BadPageToken()
    _, payload, tag = parts
    try:
        given = _unb64(tag)
        cursor = _unb64(payload).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadPageToken() from None
    if not hmac.compare_digest(given, _tag(key, scope, payload)):
        raise BadPageToken()
    return cursor


def _tag(key: bytes, scope: str, payload: str) -> bytes:
    return hmac.new(key, f"{VERSION}|{scope}|{payload}".encode(), hashlib.sha256).digest()[:TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
