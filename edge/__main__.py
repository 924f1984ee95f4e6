"""`python -m edge ...` is the `vendedge` command (e.g. `python -m edge run --config FILE`)."""

import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main())
