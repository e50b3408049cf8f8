"""``obpipe tickers [list|add CODE...|remove CODE...]``: show or edit the desired ticker set.

The desired set is the Redis SET the ingestors follow (they apply a change within 2 s, without
reconnecting); the web's control endpoint edits the same SET. Codes are validated with
:mod:`pipeline.ticker` before anything is written: one bad code refuses the whole command.
"""

from __future__ import annotations

import argparse
import sys

import redis

from pipeline.keys import Keys
from pipeline.ticker import TickerError, normalize_all

EXIT_USAGE = 2


def desired(client: redis.Redis, keys: Keys) -> list[str]:
    """The desired tickers, sorted."""
    members: set[bytes | str] = client.smembers(keys.desired_tickers)
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


def add(client: redis.Redis, keys: Keys, codes: list[str]) -> tuple[str, ...]:
    """Validate and add codes; TickerError (nothing written) if any is invalid."""
    valid = normalize_all(codes)
    if valid:
        client.sadd(keys.desired_tickers, *valid)
    return valid


def remove(client: redis.Redis, keys: Keys, codes: list[str]) -> tuple[str, ...]:
    """Validate and remove codes; TickerError (nothing written) if any is invalid."""
    valid = normalize_all(codes)
    if valid:
        client.srem(keys.desired_tickers, *valid)
    return valid


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``obpipe tickers``."""
    from pipeline.startup import boot  # noqa: PLC0415  (logging set-up only when run)

    parser = argparse.ArgumentParser(
        prog="obpipe tickers",
        description="Show or change the desired ticker set the ingestors follow.",
    )
    parser.add_argument("action", nargs="?", default="list", choices=("list", "add", "remove"))
    parser.add_argument("codes", nargs="*", metavar="CODE", help="ticker codes, e.g. BBCA TLKM")
    args = parser.parse_args(argv)
    if args.action == "list" and args.codes:
        parser.error("list takes no codes")
    if args.action != "list" and not args.codes:
        parser.error(f"{args.action} needs at least one CODE")
    settings = boot("tickers")
    keys = Keys(settings.key_prefix, settings.partitions)
    client = redis.Redis.from_url(settings.redis_url.reveal(), socket_timeout=5)
    try:
        if args.action == "add":
            codes = add(client, keys, args.codes)
            print(f"added {', '.join(codes)}")
        elif args.action == "remove":
            codes = remove(client, keys, args.codes)
            print(f"removed {', '.join(codes)}")
        current = desired(client, keys)
        print(f"desired tickers ({len(current)}): {','.join(current) or '-'}")
    except TickerError as exc:
        print(f"tickers: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except redis.RedisError as exc:
        print(f"tickers: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0
