"""``python -m argonlink``: the command line (see :mod:`argonlink.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
