"""``python -m writer``: the same program as ``obpipe write``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["write", *sys.argv[1:]]))
