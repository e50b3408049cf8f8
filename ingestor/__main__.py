"""``python -m ingestor``: the same program as ``obpipe ingest``."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["ingest", *sys.argv[1:]]))
