"""The ``obpipe`` console script: every subcommand's parser, in one place.

Each subcommand parses its flags here, reads the settings once (:func:`pipeline.startup.boot`)
and hands them, with the parsed options, to the one function of the package that owns the
work. Packages are imported only for the command that runs, so ``obpipe simulate`` does not load
the writer. ``python -m ingestor|writer|web|simulator|jobs`` call :func:`main` with their command.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_USAGE = 2
"""Bad input on the command line (argparse uses it too)."""

Handler = Callable[[argparse.Namespace], int]


# -- argument types ------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..65535")
    return value


def _instant(text: str) -> datetime:
    from pipeline.days import WIB  # noqa: PLC0415

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date-time: {text!r}") from None
    # A bare time is Jakarta time, as on the exchange.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=WIB)


def _day(text: str) -> str:
    from pipeline.days import DayError, check_day  # noqa: PLC0415

    try:
        return check_day(text)
    except DayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _day_span(text: str) -> list[str]:
    from obpipe.files import span  # noqa: PLC0415 (the reader's DAY|START..END, one parser)
    from pipeline.days import DayError  # noqa: PLC0415

    try:
        return span(text)
    except DayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _codes(text: str) -> tuple[str, ...]:
    from pipeline.ticker import TickerError, parse_list  # noqa: PLC0415

    try:
        return parse_list(text)
    except TickerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- handlers: settings once, then the owning package does the work --------------------------


def _run(args: argparse.Namespace) -> int:
    from pipeline.startup import boot  # noqa: PLC0415
    from pipeline.supervisor import run_pipeline  # noqa: PLC0415

    return run_pipeline(
        boot("run"),
        ingestors=args.ingestors,
        writers=args.writers,
        web=not args.no_web,
        worker=not args.no_worker,
    )


def _ingest(args: argparse.Namespace) -> int:
    from ingestor.service import run_ingestor  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415

    return run_ingestor(boot("ingestor"), auth_retry_s=args.auth_retry, handover_s=args.handover)


def _write(_args: argparse.Namespace) -> int:
    from pipeline.startup import boot  # noqa: PLC0415
    from writer.service import run_writer  # noqa: PLC0415

    return run_writer(boot("writer"))


def _web(args: argparse.Namespace) -> int:
    from pipeline.startup import boot  # noqa: PLC0415
    from web.service import serve  # noqa: PLC0415

    settings = boot("web")
    return serve(
        settings,
        host=args.host or settings.web_host,
        port=settings.web_port if args.port is None else args.port,
        port_file=args.port_file,
        threads=args.threads,
    )


def _simulate(args: argparse.Namespace) -> int:
    from simulator.credentials import mint_pair, mint_token  # noqa: PLC0415
    from simulator.options import Faults, Options  # noqa: PLC0415
    from simulator.service import run_simulator  # noqa: PLC0415

    if args.print_token:
        if args.pair:
            pair = mint_pair(
                args.secret,
                time.time(),
                args.user_id,
                access_ttl=args.token_ttl,
                refresh_ttl=args.refresh_ttl,
            )
            print(json.dumps(pair, indent=2))
        else:
            print(mint_token(args.secret, time.time(), args.user_id, args.token_ttl))
        return 0
    options = Options(
        host=args.host,
        port=args.port,
        port_file=args.port_file,
        secret=args.secret,
        token_ttl=args.token_ttl,
        refresh_ttl=args.refresh_ttl,
        user_id=args.user_id,
        ping_window=args.ping_window,
        levels=args.levels,
        rate=args.rate,
        max_rate=args.max_rate,
        pace=args.pace,
        clock_start=args.clock_start,
        clock_speed=args.clock_speed,
        journal=args.journal,
        seed=args.seed,
        lenient=args.lenient,
        prints_per_batch=args.prints_per_batch,
        faults=Faults(
            drop_every=args.drop_every,
            malformed_every=args.malformed_every,
            stall_every=args.stall_every,
            stall_for=args.stall_for,
            mute_every=args.mute_every,
            mute_for=args.mute_for,
            expire_token_after=args.expire_token_after,
            close_at_token_exp=args.close_at_token_exp,
            drop_trades_every=args.drop_trades_every,
        ),
    )
    return run_simulator(options, args.log_level)


def _jobs(args: argparse.Namespace) -> int:
    from jobs.worker import work  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415

    return work(boot("jobs"), burst=args.burst)


def _with_redis(process: str, work: Callable[..., int], *, with_settings: bool = False) -> int:
    """Boot ``process``, run ``work(client, keys)`` (``work(client, keys, settings)`` with
    ``with_settings``) on a short-timeout client, and turn a Redis outage or a bad ticker into
    a clear message and an exit code."""
    import redis  # noqa: PLC0415

    from pipeline.keys import Keys  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415
    from pipeline.ticker import TickerError  # noqa: PLC0415

    settings = boot(process)
    client = redis.Redis.from_url(settings.redis_url.reveal(), socket_timeout=5)
    try:
        keys = Keys(settings.key_prefix, settings.partitions)
        return work(client, keys, settings) if with_settings else work(client, keys)
    except TickerError as exc:
        print(f"{process}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except redis.RedisError as exc:
        print(f"{process}: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _status(args: argparse.Namespace) -> int:
    from pipeline.status import check, render  # noqa: PLC0415

    def work(client: Any, keys: Any, settings: Any) -> int:
        if args.check:
            ok, reason = check(client, keys, args.check, socket.gethostname())
            print(reason)
            return 0 if ok else 1
        # Today's gaps come from the gap files under DATA_DIR as well as the gap stream.
        print(render(client, keys, args.gaps, data_dir=settings.data_dir))
        return 0

    return _with_redis("status", work, with_settings=True)


def _tickers(args: argparse.Namespace) -> int:
    from pipeline.desired import add, desired, remove  # noqa: PLC0415

    def work(client: Any, keys: Any) -> int:
        if args.action == "add":
            print(f"added {', '.join(add(client, keys, args.codes))}")
        elif args.action == "remove":
            print(f"removed {', '.join(remove(client, keys, args.codes))}")
        current = desired(client, keys)
        print(f"desired tickers ({len(current)}): {','.join(current) or '-'}")
        return 0

    return _with_redis("tickers", work)


def _finalize(args: argparse.Namespace) -> int:
    import redis  # noqa: PLC0415

    from jobs.finalize import DayNotFinishedError, finalize_day  # noqa: PLC0415
    from jobs.queue import FinalizeBusyError, enqueue_finalize, job_kwargs  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415

    settings = boot("finalize")
    client = redis.Redis.from_url(settings.redis_url.reveal())
    kwargs = job_kwargs(settings)
    try:
        if args.enqueue:
            job = enqueue_finalize(client, args.day, kwargs)
            print(f"queued finalize_day({args.day}) as job {job.id}")
            return 0
        result: dict[str, Any] = finalize_day(args.day, connection=client, **kwargs)  # type: ignore[arg-type]
    except (DayNotFinishedError, FinalizeBusyError) as exc:
        print(f"obpipe finalize: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except redis.RedisError as exc:
        print(f"obpipe finalize: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    summary = {k: result[k] for k in ("day", "ok", "problems")}
    summary["files"] = len(result["files"])
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


def _alerts(args: argparse.Namespace) -> int:
    from pipeline.startup import boot  # noqa: PLC0415

    if args.test:
        from jobs.sender import send_test  # noqa: PLC0415
        from pipeline.settings import SettingsError  # noqa: PLC0415

        settings = boot("alerts")
        if not settings.alert_urls:
            print("obpipe alerts: ALERT_URLS is not set: nothing to test", file=sys.stderr)
            return EXIT_USAGE
        try:
            results = send_test(settings.alert_urls)
        except SettingsError as exc:
            print(f"obpipe alerts: {exc}", file=sys.stderr)
            return EXIT_USAGE
        for name, ok in results:
            print(f"{name}: {'sent' if ok else 'FAILED (see the log line above)'}")
        return 0 if all(ok for _, ok in results) else 1

    def work(client: Any, keys: Any) -> int:
        from datetime import UTC  # noqa: PLC0415

        from web.alerts import read_alerts  # noqa: PLC0415

        doc = read_alerts(client, keys, datetime.now(UTC), args.recent)
        monitor = doc["monitor"]
        if monitor is None:
            print("alert monitor: none running (it runs inside `obpipe jobs`)")
        else:
            count = monitor["destinations"]
            where = f"{count} destination(s)" if count else "nowhere: no ALERT_URLS"
            print(f"alert monitor: {monitor['id']}, sending to {where}")
        print(f"active ({len(doc['active'])}):")
        for item in doc["active"]:
            print(f"  {item['severity']:<8} {item['title']}  (since {item['since']})")
        sent, failed = doc["sent"], doc["failed"]
        print(f"recent ({len(doc['recent'])}), newest first; sent {sent}, failed {failed}:")
        for item in doc["recent"]:
            state = item["delivery"].get("state", "?")
            print(f"  {item['at'][:19]}  {item['kind']:<8} {state:<10} {item['subject']}")
        return 0

    return _with_redis("alerts", work)


def _token(args: argparse.Namespace) -> int:
    from ingestor.tokenctl import (  # noqa: PLC0415
        TokenCommandError,
        token_path,
        token_set,
        token_status,
    )
    from pipeline.startup import boot  # noqa: PLC0415

    settings = boot("token")
    try:
        path = token_path(settings, args.file)
        if args.action == "set":
            text = sys.stdin.read()
            return token_set(settings, text, path=path, offline=args.offline, out=sys.stderr)
        return token_status(settings, path=path)
    except TokenCommandError as exc:
        print(f"obpipe token: {exc}", file=sys.stderr)
        return exc.code


def _export(args: argparse.Namespace) -> int:
    from obpipe.export import export  # noqa: PLC0415
    from obpipe.tables import TableError  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415

    settings = boot("export")
    codes = [code for group in args.codes for code in group] if args.codes else None
    try:
        done = export(args.days, settings.data_dir, args.out, fmt=args.format, codes=codes)
    except (TableError, ValueError, OSError) as exc:
        print(f"obpipe export: {exc}", file=sys.stderr)
        return 1
    for day in done.empty_days:
        print(f"obpipe export: nothing for {day}", file=sys.stderr)
    print(
        f"exported {len(done.files)} file(s), {done.bytes / 1e6:,.1f} MB ({done.converted} "
        f"converted, the rest copied) to {args.out}"
    )
    return 0 if done.files else 1


EXIT_INCOMPLETE = 3
"""``obpipe replay``: the files were rebuilt, but the raw archive has holes (see the report)."""


def _replay(args: argparse.Namespace) -> int:
    from jobs.replay import ReplayError, replay_day  # noqa: PLC0415
    from pipeline.calendar import TradingCalendar  # noqa: PLC0415
    from pipeline.layout import REPLAY_REPORT  # noqa: PLC0415
    from pipeline.startup import boot  # noqa: PLC0415

    settings = boot("replay")
    try:
        report = replay_day(
            args.day,
            settings.data_dir,
            args.out,
            hole_s=args.hole,
            calendar=TradingCalendar.from_settings(settings),
        )
    except (ReplayError, OSError) as exc:
        print(f"obpipe replay: {exc}", file=sys.stderr)
        return 1
    files = report["files"]
    print(
        f"replayed {report['frames']:,} raw frame(s) of {args.day} into {len(files)} file(s) "
        f"under {report['out']}: {report['equal']} equal to the original, "
        f"{len(report['differ'])} different, "
        f"{sum(1 for f in files if f['original'] == 'missing')} without an original"
    )
    for path in report["differ"]:
        print(f"  differs: {path}")
    for path in report["only_in_originals"]:
        print(f"  not rebuilt (no raw frames for it): {path}")
    for warning in report["warnings"]:
        print(f"obpipe replay: WARNING: {warning}", file=sys.stderr)
    print(f"report: {Path(report['out']) / REPLAY_REPORT}")
    return 0 if report["ok"] else EXIT_INCOMPLETE


# -- parsers -------------------------------------------------------------------------------


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline on this machine (embedded Redis)",
        description="Run the whole pipeline on this machine: embedded Redis (unless REDIS_URL), "
        "the simulator (unless a Stockbit token is set), ingestors, writers, RQ worker, web.",
    )
    p.add_argument("--ingestors", type=int, default=1, help="ingestor processes (default 1)")
    p.add_argument("--writers", type=int, default=1, help="writer processes (default 1)")
    p.add_argument("--no-web", action="store_true", help="do not start the status web app")
    p.add_argument("--no-worker", action="store_true", help="do not start the RQ worker")
    p.set_defaults(handler=_run, validate=lambda args: _check_run(p, args))


def _check_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.ingestors <= 16 or not 1 <= args.writers <= 16:
        parser.error("--ingestors and --writers must be between 1 and 16")


def _add_ingest(sub: Any) -> None:
    p = sub.add_parser(
        "ingest",
        help="websocket session(s) -> Redis Streams",
        description=(
            "Stream Stockbit order books (and trades) into Redis Streams. Configured by the "
            "environment: REDIS_URL, STOCKBIT_WS_URL, STOCKBIT_API_URL, STOCKBIT_TOKEN or "
            "STOCKBIT_TOKEN_FILE, STOCKBIT_USER_ID, STOCKBIT_WS_KEY, TICKERS, REPLICATION, "
            "PING_INTERVAL_S, DEAD_AFTER_S, HEARTBEAT_S, STATUS_TTL_S, INGEST_BUFFER_MAX, "
            "STREAM_MAXLEN, TOKEN_REFRESH_MARGIN_S, OBPIPE_ID (see README.md)."
        ),
    )
    p.add_argument(
        "--auth-retry",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="seconds between retries after an authentication failure (default %(default)s; "
        "a change of the token file retries at once)",
    )
    p.add_argument(
        "--handover",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds a ticker moved to another ingestor stays subscribed here (default "
        "%(default)s), so the hand-over overlaps instead of leaving a hole",
    )
    p.set_defaults(handler=_ingest)


def _add_write(sub: Any) -> None:
    p = sub.add_parser(
        "write",
        help="Redis Streams -> daily CSV files",
        description="Copy the partition streams into daily CSV files under DATA_DIR, exactly "
        "once. Configured by the environment (README.md): REDIS_URL, DATA_DIR, PARTITIONS, "
        "COMMIT_INTERVAL_MS, LEASE_TTL_MS, HEARTBEAT_S, OBPIPE_ID, ...",
    )
    p.set_defaults(handler=_write)


def _add_web(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="status page and JSON API",
        description="Serve the obpipe status page and JSON API (waitress). "
        "Configured by the environment (REDIS_URL, WEB_HOST, WEB_PORT, WEB_ADMIN_TOKEN, ...).",
    )
    p.add_argument("--host", help="bind address (default: WEB_HOST)")
    p.add_argument("--port", type=_port, help="TCP port (default: WEB_PORT; 0 picks a free port)")
    p.add_argument(
        "--port-file", type=Path, help="write the bound port to this file once listening"
    )
    p.add_argument("--threads", type=_positive_int, default=8, help="request threads (default 8)")
    p.set_defaults(handler=_web)


def _add_simulate(sub: Any) -> None:
    from simulator.credentials import (  # noqa: PLC0415
        DEFAULT_REFRESH_TTL,
        DEFAULT_SECRET,
        DEFAULT_TOKEN_TTL,
        DEFAULT_USER_ID,
    )

    p = sub.add_parser(
        "simulate",
        help="a Stockbit-compatible feed server",
        description=(
            "A Stockbit-compatible IDX market-data server: websocket feed on /ws (subprotocol "
            "'web'), and on the same port GET /auth/websocket/key, POST /login/refresh (rotating "
            "tokens), POST /sim/relogin (revokes every refresh token) and GET /sim/stats."
        ),
    )
    net = p.add_argument_group("network")
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

    auth = p.add_argument_group("credentials")
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
        "--pair",
        action="store_true",
        help="with --print-token: print an access + refresh pair as the JSON /login/refresh "
        "answers with (what `obpipe token set` reads)",
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
        help="lifetime of access tokens: --print-token's and those /login/refresh and "
        "/sim/relogin issue (%(default)s s = 24 h; e.g. 20 for tests)",
    )
    auth.add_argument(
        "--refresh-ttl",
        type=_positive_float,
        default=DEFAULT_REFRESH_TTL,
        metavar="SECONDS",
        help="lifetime of refresh tokens (%(default)s s = 7 days); each use rotates them",
    )
    auth.add_argument(
        "--ping-window",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="drop a connection that sent no application-level ping for this long (%(default)s)",
    )

    market = p.add_argument_group("market")
    market.add_argument(
        "--levels", type=_positive_int, default=60, help="price levels per book side (%(default)s)"
    )
    market.add_argument(
        "--rate",
        type=_positive_float,
        default=1.0,
        help="book snapshots per second per ticker side, and trade batches per second per "
        "ticker (%(default)s)",
    )
    market.add_argument(
        "--prints-per-batch",
        type=_positive_int,
        metavar="N",
        help="prints in every live trade batch, each batch followed by its LivePrice "
        "(default: 1, 2 or 3 drawn 6:3:1, about 1.5 prints per LivePrice); 1 gives one "
        "LivePrice per print",
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
        "--lenient",
        action="store_true",
        help="stream a code's order book even when the connection did not also subscribe "
        "liveprice, iepiev and best_bid_offer for it (by default the simulator is strict, as "
        "the real server is believed to be: order_book alone gets no book)",
    )
    market.add_argument(
        "--journal",
        type=Path,
        metavar="PATH",
        help="append one JSON line per data frame sent to PATH (the ground truth for tests)",
    )

    faults = p.add_argument_group("faults")
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
        "--drop-trades-every",
        type=_positive_int,
        metavar="N",
        help="never send every Nth running-trade frame of a connection (its prints still count "
        "in the LivePrice volume and frequency: coverage below 100 %%)",
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
        "--mute-every",
        type=_positive_float,
        metavar="SECONDS",
        help="every SECONDS of a connection's life, send no data for --mute-for but keep "
        "answering pings (alive but silent, as a stale subscription)",
    )
    faults.add_argument(
        "--mute-for",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="length of each mute (%(default)s)",
    )
    faults.add_argument(
        "--expire-token-after",
        type=_positive_float,
        metavar="SECONDS",
        help="SECONDS after a token first authenticates (its age counts across reconnects), "
        "treat it as expired: send the 401 frame, go silent, and refuse that token from then "
        "on (a new token works)",
    )
    faults.add_argument(
        "--close-at-token-exp",
        action="store_true",
        help="close each socket (code 1008) when the access token that authenticated it "
        "reaches its exp, as a feed that ends sockets of expired tokens would",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging threshold (%(default)s)",
    )
    p.set_defaults(handler=_simulate)


def _add_jobs(sub: Any) -> None:
    p = sub.add_parser(
        "jobs",
        help="RQ worker for end-of-day jobs",
        description="RQ worker for obpipe's end-of-day jobs (finalize_day), scheduler on.",
    )
    p.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    p.set_defaults(handler=_jobs)


def _add_status(sub: Any) -> None:
    from pipeline.status import CHECKS  # noqa: PLC0415

    p = sub.add_parser(
        "status",
        help="print the live state from Redis",
        description="Print the pipeline's live state from Redis.",
    )
    p.add_argument("--gaps", type=int, default=10, help="recent gaps to show (10)")
    p.add_argument(
        "--check",
        choices=CHECKS,
        help="health check for a container: exit 0 if Redis answers and (for ingestor/writer) "
        "a process of that kind on this host has a live heartbeat, else 1",
    )
    p.set_defaults(handler=_status)


def _add_tickers(sub: Any) -> None:
    p = sub.add_parser(
        "tickers",
        help="show or change the desired ticker set",
        description="Show or change the desired ticker set the ingestors follow.",
    )
    p.add_argument("action", nargs="?", default="list", choices=("list", "add", "remove"))
    p.add_argument("codes", nargs="*", metavar="CODE", help="ticker codes, e.g. BBCA TLKM")
    p.set_defaults(handler=_tickers, validate=lambda args: _check_tickers(p, args))


def _check_tickers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.action == "list" and args.codes:
        parser.error("list takes no codes")
    if args.action != "list" and not args.codes:
        parser.error(f"{args.action} needs at least one CODE")


def _add_alerts(sub: Any) -> None:
    p = sub.add_parser(
        "alerts",
        help="show recent alerts, or send a test alert",
        description="Show the active alert conditions and the recent alerts with their delivery "
        "state (from Redis), or with --test send one test notification to every ALERT_URLS "
        "entry now and say which accepted it.",
    )
    p.add_argument("--test", action="store_true", help="send a test alert to every destination")
    p.add_argument("--recent", type=_positive_int, default=20, help="recent alerts shown (20)")
    p.set_defaults(handler=_alerts)


def _add_finalize(sub: Any) -> None:
    p = sub.add_parser(
        "finalize",
        help="verify and summarise a finished day",
        description="Check a finished day's CSV files against the writers' counts, write "
        "$DATA_DIR/manifests/DAY.json, and gzip old days (COMPRESS_AFTER_DAYS).",
    )
    p.add_argument("day", type=_day, help="the Jakarta trading day, YYYY-MM-DD")
    p.add_argument(
        "--enqueue",
        action="store_true",
        help="queue it for `obpipe jobs` (as job finalize-DAY, like the writers and the web)",
    )
    p.set_defaults(handler=_finalize)


def _add_token(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="store the Stockbit token pair, or show its expiries",
        description="`set` reads the Stockbit tokens from stdin (the JSON of /login/refresh or "
        "its data part, two JWTs on two lines: access then refresh, or one refresh JWT, which "
        "is exchanged for a pair at once), checks them and stores them in STOCKBIT_TOKEN_FILE "
        "(mode 0600, replaced atomically, created if missing); running ingestors pick them up "
        "by themselves. `status` shows both expiries and the last and next refresh, never a "
        "token. README.md says where a logged-in browser keeps the tokens.",
    )
    p.add_argument("action", choices=("set", "status"))
    p.add_argument("--file", type=Path, help="the token file (default: STOCKBIT_TOKEN_FILE)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="set: do not ask Stockbit for a websocket key to check the access token",
    )
    p.set_defaults(handler=_token)


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="copy days out as Parquet or CSV",
        description="Copy days of DATA_DIR (order books, trades, prices, and the gaps file) "
        "into a folder laid out like DATA_DIR: Parquet twins are copied, days not finalized "
        "yet are converted from CSV; --format csv copies the CSVs (or rebuilds them from "
        "Parquet where KEEP_CSV_DAYS removed them).",
    )
    p.add_argument(
        "days", type=_day_span, metavar="DAY|START..END", help="a Jakarta day, or a range"
    )
    p.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="(default %(default)s)"
    )
    p.add_argument(
        "--codes",
        type=_codes,
        nargs="+",
        metavar="CODE",
        help="only these tickers (space- or comma-separated; default: all)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("export"), help="target folder (default %(default)s)"
    )
    p.set_defaults(handler=_export)


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="rebuild a day's CSVs from its raw frame archive",
        description="Decode DAY's raw frames ($DATA_DIR/raw/DAY/, every ingestor) with this "
        "version's decoder and write the order-book, trade and price CSVs they make under "
        "$DATA_DIR/replay/DAY/ (never over the originals), each compared with its original, "
        "and replay-report.json. Holes in the raw coverage (silences, trading hours before "
        "the first or after the last frame, frames the archive lost, files torn by a crash) "
        "are warned about. Exit 0: complete; 3: rebuilt, with warnings; 1: nothing to replay.",
    )
    p.add_argument("day", type=_day, help="the Jakarta day the frames were received, YYYY-MM-DD")
    p.add_argument(
        "--out",
        type=Path,
        help="target folder (default $DATA_DIR/replay/DAY; its CSVs are replaced)",
    )
    p.add_argument(
        "--hole",
        type=_positive_float,
        default=30.0,  # jobs.replay.HOLE_S, not imported here: every command builds this parser
        metavar="S",
        help="a raw silence longer than S seconds is a hole (default %(default)s; the feed "
        "answers a ping every PING_INTERVAL_S while connected)",
    )
    p.set_defaults(handler=_replay)


COMMANDS: dict[str, Callable[[Any], None]] = {
    "run": _add_run,
    "ingest": _add_ingest,
    "write": _add_write,
    "web": _add_web,
    "simulate": _add_simulate,
    "jobs": _add_jobs,
    "status": _add_status,
    "tickers": _add_tickers,
    "finalize": _add_finalize,
    "alerts": _add_alerts,
    "token": _add_token,
    "export": _add_export,
    "replay": _add_replay,
}
"""Subcommand → the function that adds its parser (in ``--help`` order)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``obpipe`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="obpipe",
        description="Capture IDX order books streamed by Stockbit into daily CSV files.",
        epilog="`obpipe <command> --help` describes each command's options; the environment "
        "variables are listed in README.md and .env.example.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for add in COMMANDS.values():
        add(sub)
    return parser


def _stop_while_starting(_signum: int, _frame: FrameType | None) -> None:
    # Until the command installs its own handler (after imports, settings, connections) there
    # is nothing to flush or commit: a SIGTERM then is a clean stop, exit 0, not death by -15.
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``obpipe <command> ...`` and run the command; returns the process exit code."""
    before = signal.getsignal(signal.SIGTERM)
    if before is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_while_starting)
    try:
        return _dispatch(argv)
    finally:
        if signal.getsignal(signal.SIGTERM) is _stop_while_starting:
            signal.signal(signal.SIGTERM, before)


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return 0
    validate: Callable[[argparse.Namespace], None] | None = getattr(args, "validate", None)
    if validate is not None:
        validate(args)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
