"""``obpipe token set`` and ``obpipe token status``: the operator's side of the token store.

``set`` reads what the operator pasted on stdin (:func:`ingestor.tokens.parse_input`: the
refresh answer's JSON or its ``data`` part, two JWTs, or a lone refresh JWT, which is
exchanged for a pair at once), checks it (readable JWTs, not expired, one user, and — unless
``--offline`` — that Stockbit hands out a websocket key for the access token), and stores it
(:func:`ingestor.tokens.store_pair`: 0600, atomic, created if missing). Running ingestors pick
it up by themselves: an ``auth_failed`` one retries as soon as the file changes. It then
clears the ``token_refresh_failed`` / ``refresh_token_expiring`` conditions if Redis answers
(the refreshers would within a minute anyway).

``status`` prints both expiries, the last and the next refresh — never a token.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import redis

from ingestor.credentials import (
    AuthFailedError,
    CredentialsError,
    RefreshRefusedError,
    fetch_key,
    refresh_tokens,
)
from ingestor.refresher import plan_refresh
from ingestor.tokens import (
    ACCESS,
    REFRESH,
    Parsed,
    Token,
    TokenError,
    kind_of,
    parse_input,
    read_store,
    store_pair,
    token,
)
from pipeline.alerts import duration, wib
from pipeline.calendar import TradingCalendar
from pipeline.conditions import REFRESH_EXPIRING, REFRESH_FAILED, clear_condition
from pipeline.keys import Keys
from pipeline.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class TokenCommandError(Exception):
    """What the command cannot do, with the exit code to leave with."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def token_path(settings: Settings, override: Path | None) -> Path:
    """``--file``, else ``STOCKBIT_TOKEN_FILE``; a clear error without either."""
    if override is not None:
        return override
    if settings.stockbit_token_file is not None:
        return settings.stockbit_token_file
    if settings.stockbit_token is not None:
        raise TokenCommandError(
            "STOCKBIT_TOKEN is set inline: the token store (and its renewal) needs "
            "STOCKBIT_TOKEN_FILE instead"
        )
    raise TokenCommandError("STOCKBIT_TOKEN_FILE is not set (or pass --file PATH)")


def _left(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "no expiry claim"
    left = (moment - now).total_seconds()
    if left <= 0:
        return f"EXPIRED at {wib(moment)}"
    return f"valid until {wib(moment)} ({duration(left)} left)"


def _ordered(parsed: Parsed, out: TextIO) -> Parsed:
    """Two tokens pasted in the wrong order (refresh first) are swapped, with a note."""
    access, refresh = parsed.access, parsed.refresh
    if (
        access is not None
        and refresh is not None
        and kind_of(access) == REFRESH
        and kind_of(refresh) == ACCESS
    ):
        print("note: the refresh token came first; swapped the two", file=out)
        return Parsed(refresh, access)
    return parsed


def check(parsed: Parsed, now: datetime, user_override: str | None) -> None:
    """Refuse tokens that cannot work: expired, without a user, of two different users."""
    access, refresh = parsed.access, parsed.refresh
    if access is None:
        raise TokenCommandError("no access token")
    if access.claims.expired(now):
        raise TokenCommandError(f"the access token is {_left(access.expires_at, now)}")
    if not (user_override or access.claims.user_id):
        raise TokenCommandError("the access token has no data.uid claim (set STOCKBIT_USER_ID)")
    if refresh is not None:
        if refresh.claims.expired(now):
            raise TokenCommandError(f"the refresh token is {_left(refresh.expires_at, now)}")
        users = {access.claims.user_id, refresh.claims.user_id} - {None}
        if len(users) > 1:
            raise TokenCommandError("the access and refresh tokens belong to different users")


def token_set(
    settings: Settings,
    text: str,
    *,
    path: Path,
    offline: bool = False,
    out: TextIO,
    exchange: Callable[[str], tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> int:
    """Parse, check and store a pasted token pair; the exit code."""
    moment = now or datetime.now(UTC)
    if not path.parent.is_dir():
        raise TokenCommandError(f"no such folder: {path.parent}")
    try:
        parsed = _ordered(parse_input(text), out)
    except TokenError as exc:
        raise TokenCommandError(str(exc)) from None
    api = settings.stockbit_api_url
    if parsed.access is None and parsed.refresh is not None:
        swap = exchange or (lambda refresh: refresh_tokens(api, refresh))
        try:
            access, refresh = swap(parsed.refresh.reveal())
        except RefreshRefusedError as exc:
            raise TokenCommandError(f"{exc}: log in again for a new one", EXIT_FAILED) from None
        except CredentialsError as exc:
            message = f"cannot exchange the refresh token: {exc}"
            raise TokenCommandError(message, EXIT_FAILED) from None
        print("exchanged the refresh token for a new pair (it rotated: the old one is spent)")
        parsed = Parsed(token(access, ACCESS), token(refresh, REFRESH))
    check(parsed, moment, settings.stockbit_user_id)
    assert parsed.access is not None
    if not offline and settings.stockbit_ws_key is None:
        try:
            fetch_key(api, parsed.access.reveal())
        except AuthFailedError as exc:
            message = f"Stockbit refused the access token: {exc}"
            raise TokenCommandError(message, EXIT_FAILED) from None
        except CredentialsError as exc:
            print(f"warning: could not check the access token online ({exc})", file=out)
    try:
        store_pair(path, parsed.access, parsed.refresh, now=moment, by=_who())
    except OSError as exc:
        message = f"cannot write {path}: {exc.strerror or type(exc).__name__}"
        raise TokenCommandError(message, EXIT_FAILED) from None
    print(f"stored in {path} (mode 0600)")
    _describe(parsed.access, parsed.refresh, moment)
    if parsed.refresh is None:
        print(
            "no refresh token: this access token will not be renewed; paste the pair (the "
            "/login/refresh JSON, or both tokens) to let the ingestors renew it"
        )
    _clear_conditions(settings)
    print("running ingestors use it at their next connect (an auth_failed one retries now)")
    return EXIT_OK


def _describe(access: Token | None, refresh: Token | None, now: datetime) -> None:
    print(f"  access token:  {_left(access.expires_at, now) if access else 'none'}")
    print(f"  refresh token: {_left(refresh.expires_at, now) if refresh else 'none'}")


def _who() -> str:
    return f"token set@{socket.gethostname()}"


def _clear_conditions(settings: Settings) -> None:
    """A new pair ends the refresh alerts (best effort: the refreshers clear them too)."""
    client = redis.Redis.from_url(
        settings.redis_url.reveal(), socket_timeout=2, socket_connect_timeout=2
    )
    keys = Keys(settings.key_prefix, settings.partitions)
    try:
        clear_condition(client, keys, REFRESH_FAILED)
        clear_condition(client, keys, REFRESH_EXPIRING)
    except redis.RedisError:
        pass
    finally:
        client.close()


def token_status(settings: Settings, *, path: Path, now: datetime | None = None) -> int:
    """Print what the token file holds (never a token); 1 if no usable access token."""
    moment = now or datetime.now(UTC)
    print(f"token file: {path}")
    try:
        store = read_store(path)
    except TokenError as exc:
        print(f"  {exc}")
        return EXIT_FAILED
    kind = "JSON token store" if store.writable else "bare access token (read-only, no renewal)"
    print(f"  format: {kind}")
    _describe(store.access, store.refresh, moment)
    if store.refused:
        print(f"  REFRESH REFUSED at {store.refused_at}: {store.refused}")
        print("  → log in to stockbit.com and store the new pair with `obpipe token set`")
    if store.refreshed_at:
        print(f"  last refresh: {store.refreshed_at} by {store.refreshed_by}")
    if store.saved_at:
        print(f"  saved: {store.saved_at} by {store.saved_by} ({store.how})")
    access = store.access
    if (
        store.writable
        and store.refresh is not None
        and not store.refused
        and access is not None
        and access.expires_at is not None
    ):
        plan = plan_refresh(
            now=moment,
            expires_at=access.expires_at,
            lifetime_s=access.lifetime_s,
            margin_s=settings.token_refresh_margin_s,
            calendar=TradingCalendar.from_settings(settings),
        )
        print(f"  next refresh: {wib(plan.due_at)} ({plan.reason})")
    usable = access is not None and not access.claims.expired(moment)
    return EXIT_OK if usable else EXIT_FAILED
