"""Reasons are cut only where they must be, between words, and a cut always shows."""

from __future__ import annotations

import pytest

from spotrun.domain.reasons import ELLIPSIS, clip

REASON = ("agent failure: CheckpointerUnavailable: dmtcp: dmtcp_launch not found on PATH; install DMTCP 4.2.0 or "
          "choose checkpoint.method: signal|none")


def test_a_reason_that_fits_is_kept_whole():
    assert clip(REASON, len(REASON)) == REASON
    assert clip("", 5) == ""


@pytest.mark.parametrize("limit", range(2, len(REASON)))
def test_a_cut_falls_between_words_and_ends_with_an_ellipsis(limit):
    cut = clip(REASON, limit)
    assert len(cut) <= limit and cut.endswith(ELLIPSIS)
    kept = cut[: -len(ELLIPSIS)]
    assert REASON.startswith(kept)
    if limit > len("agent") + len(ELLIPSIS):  # room for the first word: never in the middle of one
        assert REASON[len(kept)] in " ,;:", cut


def test_only_a_first_word_longer_than_the_room_is_cut_inside_it():
    assert clip("x" * 100, 10) == "x" * 9 + ELLIPSIS
    assert clip("/a/very/long/path/to/nowhere and then some", 20) == "/a/very/long/path/t" + ELLIPSIS


def test_a_limit_without_room_for_the_ellipsis_is_refused():
    with pytest.raises(ValueError):
        clip(REASON, 0)
