"""``python -m web``: the status app served by waitress (see :mod:`web.service`)."""

from web.service import main

raise SystemExit(main())
