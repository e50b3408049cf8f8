"""``obpipe web`` / ``python -m web``: serve the status app with waitress.

Waitress is a production WSGI server (threaded, pure Python); Flask's development server is
never used. Bind address and port come from ``WEB_HOST`` / ``WEB_PORT``; ``--host`` and
``--port`` override them for one run (``--port 0`` picks a free port, which ``--port-file``
then records — the tests use that). SIGTERM and SIGINT stop the server cleanly, exit 0.

A background thread samples the counters every two seconds, so the frames/s sparkline covers
the last minutes even when the page was just opened.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

import redis
import waitress

from pipeline.settings import redact_url
from pipeline.startup import boot
from web.app import create_app
from web.context import EXTENSION, WebContext

log = logging.getLogger("web")

SAMPLE_EVERY_S = 2.0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 0..65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obpipe web",
        description="Serve the obpipe status page and JSON API (waitress). "
        "Configured by the environment (REDIS_URL, WEB_HOST, WEB_PORT, WEB_ADMIN_TOKEN, ...).",
    )
    parser.add_argument("--host", help="bind address (default: WEB_HOST)")
    parser.add_argument(
        "--port", type=_port, help="TCP port (default: WEB_PORT; 0 picks a free port)"
    )
    parser.add_argument(
        "--port-file", type=Path, help="write the bound port to this file once listening"
    )
    parser.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    """Run the web process until SIGTERM/SIGINT; returns the exit code."""
    args = _parser().parse_args(argv)
    settings = boot("web")
    host = args.host or settings.web_host
    port = settings.web_port if args.port is None else args.port
    app = create_app(settings)
    ctx: WebContext = app.extensions[EXTENSION]

    server = waitress.create_server(app, host=host, port=port, threads=args.threads, ident="obpipe")
    bound = int(getattr(server, "effective_port", port))
    if args.port_file is not None:
        _write_port(args.port_file, bound)
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
