"""Page tokens: only a token the API sealed, for the listing it was sealed for, opens."""

from __future__ import annotations

import pytest

from spotrun.domain.pages import BadPageToken, seal, unseal

KEY = b"k" * 48
CURSOR = '{"shard": 3, "after": "000042"}'


def test_a_sealed_cursor_opens_for_its_own_listing():
    token = seal(CURSOR, "tasks|j-1|*", KEY)
    assert unseal(token, "tasks|j-1|*", KEY) == CURSOR
    assert token.startswith("1.") and "{" not in token and "=" not in token  # URL-safe, no padding


@pytest.mark.parametrize("opened_with", [
    ("tasks|j-2|*", KEY), ("tasks|j-1|QUEUED", KEY), ("jobs|*", KEY), ("tasks|j-1|*", b"x" * 48),
], ids=["another job", "another filter", "another route", "another key"])
def test_it_opens_for_nothing_else(opened_with):
    token = seal(CURSOR, "tasks|j-1|*", KEY)
    with pytest.raises(BadPageToken, match="not one this API gave out"):
        unseal(token, *opened_with)


def _tampered() -> list[str]:
    token = seal(CURSOR, "s", KEY)
    version, payload, tag = token.split(".")
    other = seal('{"shard": 0, "after": null}', "s", KEY).split(".")[1]
    return [
        f"{version}.{other}.{tag}",  # another cursor under this tag
        f"2.{payload}.{tag}",  # another version
        f"{version}.{payload}.{tag[:-1]}",  # a shorter tag
        f"{version}.{payload}.{tag}.x", f"{version}.{payload}", "", ".", "..", "1..", "1.%.%", "1.é.é",
        f"{version}.{payload}.{tag}=", f"{version}.{payload}+.{tag}", "1.gA.gA",  # not UTF-8 inside
    ]


@pytest.mark.parametrize("token", _tampered())
def test_a_tampered_or_made_up_token_is_refused(token):
    with pytest.raises(BadPageToken):
        unseal(token, "s", KEY)
    assert isinstance(BadPageToken(), ValueError)  # the API answers a ValueError with a 400
