"""`python -m spotrun_worker`: the agent's entry point (the instance's service runs this)."""

import sys

from spotrun_worker.agent import main

sys.exit(main())
