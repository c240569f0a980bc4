"""Loaded by every Python process started with this directory on PYTHONPATH (the local runtime puts
it there for agents when the chaos soak runs). Without SPOTRUN_CHAOS_SEED it does nothing; the
agent strips SPOTRUN_* variables from its programs' environment, so programs are never affected."""

import os
import sys

if os.environ.get("SPOTRUN_CHAOS_SEED"):
    try:
        from spotrun_local.chaos.faults import install_in_process

        install_in_process(os.environ)
    except Exception as error:  # noqa: BLE001 - never stop the agent from starting
        sys.stderr.write(f"spotrun chaos: could not install the fault hooks: {error!r}\n")
