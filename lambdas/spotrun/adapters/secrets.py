"""The API's page-token key: a Secrets Manager secret the stack generates, read once per container."""

from __future__ import annotations

import threading
from typing import Any


class SecretKey:
    """The secret's string as key bytes, fetched on first use (a request that lists nothing needs none)."""

    def __init__(self, client: Any, secret_arn: str):
        self.client = client
        self.secret_arn = secret_arn
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def key(self) -> bytes:
        with self._lock:
            if self._key is None:
                value = self.client.get_secret_value(SecretId=self.secret_arn)["SecretString"]
                if len(value) < 32:
                    raise RuntimeError("the page-token key is shorter than 32 characters")
                self._key = value.encode()
            return self._key
