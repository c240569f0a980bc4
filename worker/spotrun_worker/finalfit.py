"""Will the final checkpoint fit the spot warning? A prediction from what the agent measured.

Every committed checkpoint measures its image's bytes, its capture (the checkpointer's call), its
transfer (from the first byte that could be sent to the last part in: from the capture's start when
parts go while the checkpointer writes, from its end otherwise) and its manifest + commit. The final
checkpoint of an image of B bytes is then predicted to take
    streamed:      max(B / capture rate, B / transfer rate) + commit seconds
    not streamed:  B / capture rate + B / transfer rate + commit seconds
and it fits when that is within the warning's budget: the warning (120 s on AWS) minus the time to
notice it (one metadata poll) and the margin the agent keeps before the reclaim.

When it does not fit, a warning cannot be counted on to save the work: every reclaim loses what was
done since the last periodic checkpoint, as a reclaim without warning does. The interval is then
Young's optimum for spot reclaims at `RECLAIMS_PER_HOUR_WITHOUT_FINAL` (1 an hour, pessimistic for spot
pools) instead of for unwarned losses only, so the work lost stays within a shorter interval, and the
task says so (`final checkpoint fits warning: no, predicted N s`). Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from spotrun_worker import interval

WARNING_SECONDS = 120.0
# Losses a warning does not cover (reclaims without one, host failures): the interval when the final fits.
UNWARNED_LOSSES_PER_HOUR = 0.1
# Every spot reclaim loses work when the final checkpoint does not fit; a pessimistic rate for spot pools.
RECLAIMS_PER_HOUR_WITHOUT_FINAL = 1.0


@dataclass(frozen=True)
class Measured:
    """One committed checkpoint's figures."""

    bytes: int
    capture_seconds: float
    transfer_seconds: float
    commit_seconds: float
    streamed: bool

    @property
    def capture_bytes_per_second(self) -> float:
        return self.bytes / max(self.capture_seconds, 1e-6)

    @property
    def transfer_bytes_per_second(self) -> float:
        return self.bytes / max(self.transfer_seconds, 1e-6)


@dataclass(frozen=True)
class Fit:
    predicted_seconds: float
    budget_seconds: float

    @property
    def fits(self) -> bool:
        return self.predicted_seconds <= self.budget_seconds

    @property
    def note(self) -> str:
        return f"final checkpoint fits warning: {'yes' if self.fits else 'no'}, predicted {self.predicted_seconds:.0f} s"


def predict_final_seconds(measured: Measured, image_bytes: int | None = None) -> float:
    size = measured.bytes if image_bytes is None else image_bytes
    capture = size / measured.capture_bytes_per_second
    transfer = size / measured.transfer_bytes_per_second
    moving = max(capture, transfer) if measured.streamed else capture + transfer
    return moving + measured.commit_seconds


def budget_seconds(warning_seconds: float, notice_seconds: float, margin_seconds: float) -> float:
    """What a final checkpoint may take: the warning, less the time to notice it and the margin kept."""
    return max(0.0, warning_seconds - notice_seconds - margin_seconds)


def fit(measured: Measured, budget: float, image_bytes: int | None = None) -> Fit:
    return Fit(predict_final_seconds(measured, image_bytes), budget)


def checkpoint_interval(cost_seconds: float, final: Fit | None, minimum: float) -> float:
    """The adaptive interval: for unwarned losses while the final checkpoint fits (or nothing is known
    yet), for every spot reclaim when it does not."""
    rate = RECLAIMS_PER_HOUR_WITHOUT_FINAL if final is not None and not final.fits else UNWARNED_LOSSES_PER_HOUR
    return interval.checkpoint_interval(cost_seconds=cost_seconds, interruptions_per_hour=rate, minimum=minimum)
