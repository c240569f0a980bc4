"""`make run` / `python -m spotrun_local`: the local runtime running a sample problem end to end."""

import logging
import sys

from spotrun_local.demo import run

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(run())
