"""`make run` / `python -m spotrun_local`: the local runtime running a sample problem end to end."""

import logging
import os
import sys
import warnings

# The handlers' structured logs and metrics go to CloudWatch in AWS; locally they would drown the
# timeline, so only warnings are shown. Set before the handlers are imported (Powertools reads it then).
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

warnings.filterwarnings("ignore", message="No application metrics to publish")

from spotrun_local.demo import run  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(run(serve="--serve" in sys.argv[1:]))
