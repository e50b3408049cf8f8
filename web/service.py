"""``obpipe web`` / ``python -m web``: serve the status app with waitress.

Waitress is a production WSGI server (threaded, pure Python); Flask's development server is
never used. Bind address and port come from ``WEB_HOST`` / ``WEB_PORT``; ``--host`` and
``--port`` override them for one run (``--port 0`` picks a free port, which ``--port-file``
then records — the tests use that). SIGTERM and SIGINT stop the server cleanly, exit 0.

A background thread samples the counters every two seconds, so the frames/s sparkline covers
the last minutes even when the page was just opened.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

import redis
import waitress

from pipeline.settings import Settings, redact_url
from web.app import create_app
from web.context import EXTENSION, WebContext

log = logging.getLogger("web")

SAMPLE_EVERY_S = 2.0


def _write_port(path: Path, port: int) -> None:
    # Written atomically so a watcher never reads a half-written number.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".port-")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def _sampler(ctx: WebContext, stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_EVERY_S):
        try:
            ctx.sample()
        except redis.RedisError:
            # The page reports Redis outages; the sampler just tries again next time.
            continue


def serve(settings: Settings, *, host: str, port: int, port_file: Path | None, threads: int) -> int:
    """``obpipe web``: serve until SIGTERM/SIGINT; returns the exit code."""
    app = create_app(settings)
    ctx: WebContext = app.extensions[EXTENSION]

    server = waitress.create_server(app, host=host, port=port, threads=threads, ident="obpipe")
    bound = int(getattr(server, "effective_port", port))
    if port_file is not None:
        _write_port(port_file, bound)
    log.info(
        "status page on http://%s:%d/ (redis %s, %s)",
        host,
        bound,
        redact_url(settings.redis_url.reveal()),
        "read-only: WEB_ADMIN_TOKEN unset" if ctx.read_only else "control enabled",
    )

    stop = threading.Event()
    sampler = threading.Thread(target=_sampler, args=(ctx, stop), name="sampler", daemon=True)
    sampler.start()

    def _shutdown(signum: int, _frame: FrameType | None) -> None:
        # waitress' run loop turns KeyboardInterrupt into a clean close of its sockets and
        # request threads; raising it from the handler is how to reach that path on SIGTERM.
        log.info("received %s, stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    try:
        server.run()
    except KeyboardInterrupt:
        server.close()
    finally:
        stop.set()
    log.info("stopped")
    return 0
