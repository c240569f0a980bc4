"""What this worker image can run, checked once at boot before the agent serves any task.

The worker image brings DMTCP and the agent's Python (worker/image/build-worker-image.sh); nothing is
compiled at boot. What the image provides is checked here, not assumed: each checkpoint method's
checkpointer is made once (for `dmtcp`: the four programs found and `dmtcp_launch --version` equal to
the pinned version, worker/image/dmtcp.pin). A method the image cannot run is not discovered by
failing task after task: the agent reports it once, as a fault of the image, for the first task that
needs it, and ends its instance (spotrun_worker.agent; the control plane's side in spotrun.attempts).

`python -m spotrun_worker check-image [--out FILE]` runs the check and prints it as JSON (exit 1 when
a method is unavailable). On AWS the user data runs it before the agent starts, with `--out` naming
the file ($SPOTRUN_IMAGE_CHECK) the agent then reads instead of checking again; where there is no
such file (the local runtime), the agent checks at its start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun_worker import checkpointers
from spotrun_worker.checkpointers import CheckpointerUnavailable


@dataclass(frozen=True)
class ImageCheck:
    image_id: str | None = None  # the AMI the instance booted from, when the metadata service says
    unavailable: dict[str, str] = field(default_factory=dict)  # checkpoint method -> why it cannot run here

    def problem(self, method: str) -> str | None:
        return self.unavailable.get(method)

    def view(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "methods": {
            method: {"available": method not in self.unavailable, **({"problem": self.unavailable[method]}
                                                                     if method in self.unavailable else {})}
            for method in checkpointers.METHODS}}


def check_image(image_id: str | None = None) -> ImageCheck:
    """Make each method's checkpointer once; the ones that cannot be made, with the reason why."""
    unavailable: dict[str, str] = {}
    for method in checkpointers.METHODS:
        try:
            checkpointers.make_checkpointer(method)
        except CheckpointerUnavailable as error:
            unavailable[method] = str(error)
    return ImageCheck(image_id, unavailable)


def load(path: str | Path) -> ImageCheck | None:
    """The boot check's verdict as `check-image --out` wrote it; None when there is none to read."""
    try:
        view = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    methods = view.get("methods") or {}
    return ImageCheck(view.get("image_id"), {method: str(state.get("problem") or "unavailable")
                                             for method, state in methods.items() if not state.get("available")})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m spotrun_worker check-image",
                                     description="Check which checkpoint methods this worker image can run.")
    parser.add_argument("--out", help="also write the verdict here (the agent reads it; on an instance: "
                                      "the image id comes from the metadata service)")
    args = parser.parse_args(argv)
    image_id = None
    if args.out:
        from spotrun_worker.imds import Imds

        with contextlib.suppress(Exception):  # the id only labels the verdict
            image_id = Imds(timeout=1.0).get("ami-id")
    check = check_image(image_id)
    text = json.dumps(check.view(), indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 1 if check.unavailable else 0
