"""``python -m web``: the same program as ``obpipe web``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["web", *sys.argv[1:]]))
