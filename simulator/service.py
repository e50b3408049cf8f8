"""``python -m simulator`` / ``obpipe simulate``: the command line of the feed simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from simulator.credentials import DEFAULT_SECRET, DEFAULT_TOKEN_TTL, DEFAULT_USER_ID, mint_token
from simulator.options import Faults, Options
from simulator.server import serve_until_signalled
from stockbit.timestamps import WIB

log = logging.getLogger("simulator")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date-time: {text!r}") from None
    # A bare time is Jakarta time, as on the exchange.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=WIB)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every flag documented for ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="simulator",
        description=(
            "A Stockbit-compatible IDX market-data server: websocket feed on /ws (subprotocol "
            "'web') and GET /auth/websocket/key on the same port."
        ),
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    net.add_argument(
        "--port",
        type=_port,
        default=8765,
        help="port to listen on; 0 picks a free one (%(default)s)",
    )
    net.add_argument(
        "--port-file",
        type=Path,
        metavar="PATH",
        help="write the bound port to PATH once listening (for tests with --port 0)",
    )

    auth = parser.add_argument_group("credentials")
    auth.add_argument(
        "--secret",
        default=DEFAULT_SECRET,
        help="HMAC key that signs and checks tokens (default: a fixed built-in string, so a "
        "token printed by one run works with another)",
    )
    auth.add_argument(
        "--print-token",
        action="store_true",
        help="print a fresh access token for --user-id and exit",
    )
    auth.add_argument(
        "--user-id",
        type=_positive_int,
        default=DEFAULT_USER_ID,
        help="user id (JWT claim data.uid) of --print-token (%(default)s)",
    )
    auth.add_argument(
        "--token-ttl",
        type=_positive_float,
        default=DEFAULT_TOKEN_TTL,
        metavar="SECONDS",
        help="lifetime of --print-token's token (%(default)s s = 24 h)",
    )
    auth.add_argument(
        "--ping-window",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="drop a connection that sent no application-level ping for this long (%(default)s)",
    )

    market = parser.add_argument_group("market")
    market.add_argument(
        "--levels",
        type=_positive_int,
        default=60,
        help="price levels per book side (%(default)s)",
    )
    market.add_argument(
        "--rate",
        type=_positive_float,
        default=1.0,
        help="book snapshots per second per ticker side, and trade batches per second per "
        "ticker (%(default)s)",
    )
    market.add_argument(
        "--max-rate",
        action="store_true",
        help="send book snapshots as fast as the clients drain them (benchmarks); the touch "
        "stays put and ladders cycle through prebuilt variants",
    )
    market.add_argument(
        "--pace",
        type=_positive_float,
        metavar="FPS",
        help="with --max-rate: send at most FPS book frames per second in all (a fixed offered "
        "load from prebuilt frames, beyond what --rate's timers can reach)",
    )
    market.add_argument(
        "--clock-start",
        type=_instant,
        metavar="ISO",
        help="virtual exchange time at start, e.g. 2026-03-02T23:59:58+07:00 (default: now)",
    )
    market.add_argument(
        "--clock-speed",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="virtual seconds per real second (%(default)s)",
    )
    market.add_argument("--seed", type=int, help="random seed, for a reproducible market")
    market.add_argument(
        "--journal",
        type=Path,
        metavar="PATH",
        help="append one JSON line per data frame sent to PATH (the ground truth for tests)",
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--drop-every",
        type=_positive_float,
        metavar="SECONDS",
        help="abort each connection this long after it opened (the client sees code 1006)",
    )
    faults.add_argument(
        "--malformed-every",
        type=_positive_int,
        metavar="N",
        help="replace every Nth data frame of a connection with bytes that do not decode",
    )
    faults.add_argument(
        "--stall-every",
        type=_positive_float,
        metavar="SECONDS",
        help="every SECONDS of a connection's life, go quiet (no data, no pongs) for --stall-for",
    )
    faults.add_argument(
        "--stall-for",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="length of each stall (%(default)s)",
    )
    faults.add_argument(
        "--expire-token-after",
        type=_positive_float,
        metavar="SECONDS",
        help="SECONDS after a token first authenticates (its age counts across reconnects), "
        "treat it as expired: send the 401 frame, go silent, and refuse that token from then "
        "on (a new token works)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging threshold (%(default)s)",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into :class:`Options`."""
    return Options(
        host=args.host,
        port=args.port,
        port_file=args.port_file,
        secret=args.secret,
        ping_window=args.ping_window,
        levels=args.levels,
        rate=args.rate,
        max_rate=args.max_rate,
        pace=args.pace,
        clock_start=args.clock_start,
        clock_speed=args.clock_speed,
        journal=args.journal,
        seed=args.seed,
        faults=Faults(
            drop_every=args.drop_every,
            malformed_every=args.malformed_every,
            stall_every=args.stall_every,
            stall_for=args.stall_for,
            expire_token_after=args.expire_token_after,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator (or print a token); return the process exit code."""
    args = build_parser().parse_args(argv)
    if args.print_token:
        print(mint_token(args.secret, time.time(), args.user_id, args.token_ttl))
        return 0
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The library logs every rejected handshake at INFO; ours already says what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        asyncio.run(serve_until_signalled(options_from(args)))
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    except KeyboardInterrupt:
        # A second Ctrl-C while shutting down; the first one already started a clean stop.
        pass
    return 0
