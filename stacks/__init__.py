"""The spotrun CDK app: one stack composed of one construct per capability.

The control plane's wiring (`spotrun.resources`) lives in the Lambda asset root, `lambdas/`, so
that the handlers and the local runtime import it as `spotrun.resources` too. Importing this
package makes that root importable, so `app.py`, the tests and `cdk synth` all read the same
declarations.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS_DIR = REPO_ROOT / "lambdas"

if str(LAMBDAS_DIR) not in sys.path:
    sys.path.insert(0, str(LAMBDAS_DIR))
