"""``python -m simulator``: the same program as ``obpipe simulate``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["simulate", *sys.argv[1:]]))
