"""``python -m ingestor``: the same program as ``obpipe ingest``."""

from ingestor.service import main

raise SystemExit(main())
