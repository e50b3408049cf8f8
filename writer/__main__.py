"""``python -m writer``: the same program as ``obpipe write``."""

from writer.service import main

raise SystemExit(main())
