"""``python -m simulator``: see :mod:`simulator.service`."""

import sys

from simulator.service import main

if __name__ == "__main__":
    sys.exit(main())
