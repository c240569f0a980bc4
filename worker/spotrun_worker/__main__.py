"""`python -m spotrun_worker`: the agent's entry point (the instance's service runs this).

`python -m spotrun_worker check-image [--out FILE]` only checks what the worker image provides (bootcheck).
"""

import sys

if sys.argv[1:2] == ["check-image"]:
    from spotrun_worker.bootcheck import main as check
    sys.exit(check(sys.argv[2:]))
if sys.argv[1:]:
    sys.exit(f"usage: python -m spotrun_worker [check-image] (unknown arguments: {' '.join(sys.argv[1:])})")

from spotrun_worker.agent import main  # noqa: E402 - only the agent needs it

sys.exit(main())
