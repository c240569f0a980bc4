"""`python -m spotrun_cli ...`"""

import sys

from spotrun_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
