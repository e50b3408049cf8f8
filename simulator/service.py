"""``obpipe simulate`` / ``python -m simulator``: run the feed simulator (flags in pipeline.cli)."""

from __future__ import annotations

import asyncio
import logging
import sys

from simulator.options import Options
from simulator.server import serve_until_signalled

log = logging.getLogger("simulator")


def run_simulator(options: Options, log_level: str) -> int:
    """``obpipe simulate``: serve until SIGTERM/SIGINT; return the process exit code."""
    logging.basicConfig(
        level=log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The library logs every rejected handshake at INFO; ours already says what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        asyncio.run(serve_until_signalled(options))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    except KeyboardInterrupt:
        # A second Ctrl-C while shutting down; the first one already started a clean stop.
        pass
    return 0
