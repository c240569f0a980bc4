"""The final checkpoint's prediction against the spot warning, and the interval it leads to (pure)."""

from __future__ import annotations

import pytest

from spotrun_worker import finalfit, interval
from spotrun_worker.finalfit import Fit, Measured

GIB = 1 << 30


def test_a_streamed_checkpoint_takes_the_slower_of_capture_and_transfer_plus_the_commit():
    # 1 GiB captured in 4 s (256 MiB/s) and moved in 10 s (102 MiB/s), commit 0.5 s
    measured = Measured(bytes=GIB, capture_seconds=4.0, transfer_seconds=10.0, commit_seconds=0.5, streamed=True)
    assert finalfit.predict_final_seconds(measured) == pytest.approx(10.5)
    # a process that grew to 8 GiB: the same rates
    assert finalfit.predict_final_seconds(measured, image_bytes=8 * GIB) == pytest.approx(80.5)


def test_a_checkpoint_uploaded_after_its_capture_takes_both():
    measured = Measured(bytes=GIB, capture_seconds=4.0, transfer_seconds=10.0, commit_seconds=0.5, streamed=False)
    assert finalfit.predict_final_seconds(measured) == pytest.approx(14.5)


def test_the_budget_is_the_warning_less_noticing_it_and_the_margin():
    assert finalfit.budget_seconds(120.0, 5.0, 10.0) == 105.0
    assert finalfit.budget_seconds(12.0, 0.5, 10.0) == 1.5  # the local runtime's time-scaled warning
    assert finalfit.budget_seconds(5.0, 0.5, 10.0) == 0.0


def test_the_note_says_whether_it_fits_and_the_prediction():
    assert Fit(140.4, 105.0).note == "final checkpoint fits warning: no, predicted 140 s"
    assert Fit(62.0, 105.0).note == "final checkpoint fits warning: yes, predicted 62 s"
    assert Fit(105.0, 105.0).fits


def test_when_the_final_checkpoint_does_not_fit_the_interval_is_for_every_reclaim():
    cost = 60.0
    fits, unfit = Fit(62.0, 105.0), Fit(140.0, 105.0)
    assert finalfit.checkpoint_interval(cost, None, 30.0) == finalfit.checkpoint_interval(cost, fits, 30.0)
    assert finalfit.checkpoint_interval(cost, fits, 30.0) == interval.checkpoint_interval(
        cost_seconds=cost, interruptions_per_hour=finalfit.UNWARNED_LOSSES_PER_HOUR, minimum=30.0)
    shortened = finalfit.checkpoint_interval(cost, unfit, 30.0)
    assert shortened == interval.checkpoint_interval(
        cost_seconds=cost, interruptions_per_hour=finalfit.RECLAIMS_PER_HOUR_WITHOUT_FINAL, minimum=30.0)
    assert shortened < finalfit.checkpoint_interval(cost, fits, 30.0) / 3
