"""Checkpointers: how the agent runs the user's program so that it can be checkpointed and resumed.

`make_checkpointer(method, **options)` returns one for a job's `checkpoint.method`:

- `dmtcp`: transparent checkpoints of any program (DMTCP 4.2.0); options `bin_dir`, `gzip`,
  `startup_timeout`, `settle_seconds`, `poll_seconds`; with `gang` (a DmtcpGang: the rank and rank 0's
  coordinator), one rank of a gang whose processes all join rank 0's coordinator (`dmtcp_gang`).
- `signal`: the program writes its own state when signalled; options `signal_name` (default
  SIGUSR1), `signal_target` ("leader" or "group"), `poll_seconds`. See `cooperative` for the
  protocol a program follows.
- `none`: no checkpoints, every attempt starts from scratch.

Options meant for another method are ignored, so the agent can pass the job's checkpoint settings
whatever the method; an option no method knows is an error.
"""

from __future__ import annotations

from typing import Any

from .base import Checkpointer, CheckpointError, CheckpointerUnavailable, CheckpointNotReady, CheckpointUnsupported
from .cooperative import SignalCheckpointer
from .dmtcp import DmtcpCheckpointer
from .dmtcp_gang import DmtcpGang, GangDmtcpCheckpointer
from .facts import compatible, environment_facts
from .nocheckpoint import NoCheckpointer

__all__ = [
    "Checkpointer", "CheckpointError", "CheckpointNotReady", "CheckpointUnsupported", "CheckpointerUnavailable",
    "DmtcpCheckpointer", "DmtcpGang", "GangDmtcpCheckpointer", "NoCheckpointer", "SignalCheckpointer", "METHODS",
    "compatible", "environment_facts", "make_checkpointer",
]



def _dmtcp(gang: DmtcpGang | None = None, **options: Any) -> DmtcpCheckpointer:
    return GangDmtcpCheckpointer(gang, **options) if gang is not None else DmtcpCheckpointer(**options)


_FACTORIES: dict[str, tuple[Any, frozenset[str]]] = {
    "dmtcp": (_dmtcp, frozenset({"bin_dir", "gzip", "startup_timeout", "settle_seconds", "poll_seconds", "gang"})),
    "signal": (SignalCheckpointer, frozenset({"signal_name", "signal_target", "poll_seconds"})),
    "none": (NoCheckpointer, frozenset()),
}
METHODS = tuple(_FACTORIES)


def make_checkpointer(method: str, **options: Any) -> Checkpointer:
    """A checkpointer for `method`; CheckpointerUnavailable when its tools are not installed."""
    if method not in _FACTORIES:
        raise ValueError(f"unknown checkpoint method {method!r}; expected one of {', '.join(METHODS)}")
    known = frozenset().union(*(accepted for _, accepted in _FACTORIES.values()))
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown checkpointer option(s): {', '.join(unknown)}")
    factory, accepted = _FACTORIES[method]
    checkpointer: Checkpointer = factory(**{k: v for k, v in options.items() if k in accepted})
    return checkpointer
