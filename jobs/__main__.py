"""``python -m jobs``: the same program as ``obpipe jobs``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["jobs", *sys.argv[1:]]))
