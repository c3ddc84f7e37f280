"""``python -m loadtests``: see loadtests.cli and loadtests.commands."""

import sys

from loadtests.commands import main

if __name__ == "__main__":
    sys.exit(main())
