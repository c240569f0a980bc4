"""`make run`: the local runtime. Not built yet (issue 3); says so instead of pretending."""

import sys

if __name__ == "__main__":
    print("spotrun's local runtime (moto server, local agents, replayed spot market) is not built yet: "
          "see issue 3. `make test` runs the control plane against moto.", file=sys.stderr)
    sys.exit(2)
