"""``Settings``: the environment, read once at start-up, validated, and passed down.

This is the only module that reads ``os.environ``. Every variable is documented in the
README's table and in ``.env.example``; :meth:`Settings.from_env` checks all of them and, if
any is wrong, raises one :class:`SettingsError` whose message names every bad variable.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from pipeline.calendar import check_holidays_file
from pipeline.secret import Secret
from pipeline.ticker import TickerError, parse_list

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    """One or more environment variables are invalid; the message lists each of them."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


def redact_url(url: str) -> str:
    """Hide the password (if any) of a URL for display."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}<hidden>@{host}"))


@dataclass(frozen=True)
class Settings:
    """Every knob of every obpipe process. Build with :meth:`from_env`."""

    redis_url: Secret = field(default_factory=lambda: Secret("redis://localhost:6379/0"))
    redis_url_set: bool = False
    key_prefix: str = "obpipe:"
    partitions: int = 16
    stream_maxlen: int = 2_000_000

    stockbit_ws_url: str = "wss://wss-jkt.trading.stockbit.com/ws"
    stockbit_api_url: str = "https://exodus.stockbit.com"
    stockbit_token: Secret | None = None
    stockbit_token_file: Path | None = None
    stockbit_user_id: str | None = None
    stockbit_ws_key: Secret | None = None
    token_refresh_margin_s: float = 10_800.0
    """Renew the access token once less than this is left (capped at a third of its life)."""
    tickers: tuple[str, ...] = ()
    subscribe_trades: bool = True

    data_dir: Path = Path("data")
    web_host: str = "127.0.0.1"
    web_port: int = 5151
    web_admin_token: Secret | None = None
    log_level: str = "INFO"
    log_format: str = "text"

    process_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    ping_interval_s: float = 10.0
    dead_after_s: float = 30.0
    stale_resubscribe_s: float = 90.0
    """Continuous trading without a data frame (pongs arriving) → resubscribe, ``stale`` gap."""
    stale_reconnect_s: float = 180.0
    """... and → reconnect."""
    replication: int = 1
    ingest_buffer_max: int = 200_000
    heartbeat_s: float = 1.0
    status_ttl_s: float = 10.0
    commit_interval_ms: int = 250
    lease_ttl_ms: int = 5_000
    finalize_grace_min: int = 30
    compress_after_days: int = 0
    keep_csv_days: int = 0
    """Remove a finalized day's ticker CSVs at this age, once its Parquet verified (0 = never)."""
    raw_archive: bool = True
    """Keep every received frame in ``raw/YYYY-MM-DD/`` (:mod:`ingestor.archive`)."""
    raw_keep_days: int = 7
    """Remove raw folders this many days old (0 = keep them all)."""
    raw_min_free_mb: int = 5120
    """Stop archiving while ``DATA_DIR`` has less free space than this (MiB)."""
    holidays_file: Path | None = None
    """Extra IDX closures/openings (format: :func:`pipeline.calendar.parse_holidays_file`)."""
    alert_urls: tuple[Secret, ...] = ()
    """Apprise URLs alerts are sent to (each one carries a credential: never shown)."""
    alert_gap_s: float = 60.0
    alert_lag_s: float = 30.0
    alert_repeat_min: int = 30

    def __repr__(self) -> str:
        # Dataclass repr would print the Secrets as <hidden> already; the URL needs redaction.
        shown = {k: v for k, v in self.__dict__.items() if k != "redis_url"}
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings(redis_url={redact_url(self.redis_url.reveal())!r}, {inner})"

    @property
    def has_stockbit_token(self) -> bool:
        """True when a real Stockbit token is configured (inline or as a file)."""
        return self.stockbit_token is not None or self.stockbit_token_file is not None

    def secrets(self) -> tuple[str, ...]:
        """Every configured credential value, for the log filter that scrubs them."""
        values = [s.reveal() for s in (self.stockbit_token, self.stockbit_ws_key) if s]
        if self.web_admin_token:
            values.append(self.web_admin_token.reveal())
        password = urlsplit(self.redis_url.reveal()).password
        if password:
            values.append(password)
        for url in self.alert_urls:
            values.extend(alert_url_secrets(url.reveal()))
        return tuple(v for v in values if len(v) >= 4)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment (``os.environ`` unless given)."""
        reader = _Reader(os.environ if env is None else env)
        values = reader.read_all()
        if reader.problems:
            raise SettingsError(reader.problems)
        return cls(**values)  # type: ignore[arg-type]


class _Reader:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def parse(self, name: str, default: T, convert: Callable[[str], T]) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TickerError) as exc:
            self.problems.append(f"{name}: {exc}")
            return default

    def read_all(self) -> dict[str, object]:
        d = Settings.__dataclass_fields__
        out: dict[str, object] = {}
        redis_url = self.parse("REDIS_URL", None, _redis_url)
        out["redis_url_set"] = redis_url is not None
        if redis_url is not None:
            out["redis_url"] = Secret(redis_url)
        out["key_prefix"] = self.parse("OBPIPE_PREFIX", d["key_prefix"].default, _prefix)
        out["partitions"] = self.parse("PARTITIONS", 16, _int_range(1, 1024))
        out["stream_maxlen"] = self.parse("STREAM_MAXLEN", 2_000_000, _int_range(1000, 10**9))
        out["stockbit_ws_url"] = self.parse(
            "STOCKBIT_WS_URL", d["stockbit_ws_url"].default, _url(("ws", "wss"))
        )
        out["stockbit_api_url"] = self.parse(
            "STOCKBIT_API_URL", d["stockbit_api_url"].default, _url(("http", "https"))
        )
        token = self.raw("STOCKBIT_TOKEN")
        token_file = self.raw("STOCKBIT_TOKEN_FILE")
        if token and token_file:
            self.problems.append(
                "STOCKBIT_TOKEN and STOCKBIT_TOKEN_FILE: set one of them, not both"
            )
        if token:
            if token.count(".") != 2:
                self.problems.append(
                    "STOCKBIT_TOKEN: not a JWT (expected three dot-separated parts)"
                )
            out["stockbit_token"] = Secret(token)
        if token_file:
            path = Path(token_file)
            # A missing file in an existing folder is fine: the ingestor waits in auth_failed
            # until `obpipe token set` creates it (a fresh compose volume starts empty).
            if path.exists() and not path.is_file():
                self.problems.append(f"STOCKBIT_TOKEN_FILE: not a file: {path}")
            elif not path.exists() and not path.parent.is_dir():
                self.problems.append(f"STOCKBIT_TOKEN_FILE: no such folder: {path.parent}")
            out["stockbit_token_file"] = path
        out["stockbit_user_id"] = self.parse("STOCKBIT_USER_ID", None, _digits)
        key = self.raw("STOCKBIT_WS_KEY")
        if key:
            out["stockbit_ws_key"] = Secret(key)
        out["token_refresh_margin_s"] = self.parse(
            "TOKEN_REFRESH_MARGIN_S", 10_800.0, _float_range(60, 7 * 86_400)
        )
        no_tickers: tuple[str, ...] = ()
        out["tickers"] = self.parse("TICKERS", no_tickers, parse_list)
        out["subscribe_trades"] = self.parse("SUBSCRIBE_TRADES", True, _bool)
        out["data_dir"] = self.parse("DATA_DIR", Path("data"), Path)
        out["web_host"] = self.parse("WEB_HOST", "127.0.0.1", _host)
        out["web_port"] = self.parse("WEB_PORT", 5151, _int_range(1, 65535))
        admin = self.raw("WEB_ADMIN_TOKEN")
        if admin:
            if len(admin) < 8:
                self.problems.append("WEB_ADMIN_TOKEN: too short (use at least 8 characters)")
            out["web_admin_token"] = Secret(admin)
        out["log_level"] = self.parse("LOG_LEVEL", "INFO", _choice(LOG_LEVELS, upper=True))
        out["log_format"] = self.parse("LOG_FORMAT", "text", _choice(LOG_FORMATS))
        process_id = self.parse("OBPIPE_ID", None, _process_id)
        if process_id is not None:
            out["process_id"] = process_id
        out["ping_interval_s"] = self.parse("PING_INTERVAL_S", 10.0, _float_range(0.1, 300))
        out["dead_after_s"] = self.parse("DEAD_AFTER_S", 30.0, _float_range(0.5, 3600))
        resubscribe = self.parse("STALE_RESUBSCRIBE_S", 90.0, _float_range(1, 3600))
        reconnect = self.parse("STALE_RECONNECT_S", 180.0, _float_range(1, 7200))
        if reconnect <= resubscribe:
            self.problems.append(
                f"STALE_RECONNECT_S: {reconnect:g} must be longer than "
                f"STALE_RESUBSCRIBE_S ({resubscribe:g}): resubscribe first, then reconnect"
            )
        out["stale_resubscribe_s"] = resubscribe
        out["stale_reconnect_s"] = reconnect
        out["replication"] = self.parse("REPLICATION", 1, _int_range(1, 5))
        out["ingest_buffer_max"] = self.parse("INGEST_BUFFER_MAX", 200_000, _int_range(100, 10**8))
        out["heartbeat_s"] = self.parse("HEARTBEAT_S", 1.0, _float_range(0.05, 60))
        out["status_ttl_s"] = self.parse("STATUS_TTL_S", 10.0, _float_range(0.5, 600))
        out["commit_interval_ms"] = self.parse("COMMIT_INTERVAL_MS", 250, _int_range(1, 60_000))
        out["lease_ttl_ms"] = self.parse("LEASE_TTL_MS", 5_000, _int_range(200, 600_000))
        out["finalize_grace_min"] = self.parse("FINALIZE_GRACE_MIN", 30, _int_range(0, 24 * 60))
        out["compress_after_days"] = self.parse("COMPRESS_AFTER_DAYS", 0, _int_range(0, 3650))
        out["keep_csv_days"] = self.parse("KEEP_CSV_DAYS", 0, _int_range(0, 3650))
        out["raw_archive"] = self.parse("RAW_ARCHIVE", True, _bool)
        out["raw_keep_days"] = self.parse("RAW_KEEP_DAYS", 7, _int_range(0, 3650))
        out["raw_min_free_mb"] = self.parse("RAW_MIN_FREE_MB", 5120, _int_range(0, 10**8))
        out["holidays_file"] = self.parse("HOLIDAYS_FILE", None, check_holidays_file)
        no_urls: tuple[Secret, ...] = ()
        out["alert_urls"] = self.parse("ALERT_URLS", no_urls, _alert_urls)
        out["alert_gap_s"] = self.parse("ALERT_GAP_S", 60.0, _float_range(1, 86_400))
        out["alert_lag_s"] = self.parse("ALERT_LAG_S", 30.0, _float_range(1, 86_400))
        out["alert_repeat_min"] = self.parse("ALERT_REPEAT_MIN", 30, _int_range(0, 7 * 24 * 60))
        return out


_URL_SPLIT = re.compile(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_APPRISE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+\Z")
_URL_PIECES = re.compile(r"[/:@?&=,;#]+")


def split_alert_urls(value: str) -> list[str]:
    """``ALERT_URLS`` → its entries: separated by whitespace, or by commas before the next
    ``scheme://`` (a comma inside one URL, as in ``mailto://...?to=a@x,b@y``, stays)."""
    return [part.strip(",") for part in _URL_SPLIT.split(value) if part.strip(",")]


def _alert_urls(value: str) -> tuple[Secret, ...]:
    # Entries are named by position only: their text holds bot tokens and passwords. Whether
    # apprise can send to each is checked where alerts are sent (jobs.sender.destinations),
    # so the capture processes do not load apprise's 200 plugins at every start.
    entries = split_alert_urls(value)
    bad = [str(i) for i, url in enumerate(entries, 1) if not _APPRISE_URL.match(url)]
    if bad:
        which = f"entry {bad[0]} is" if len(bad) == 1 else f"entries {', '.join(bad)} are"
        raise ValueError(
            f"{which} not a URL, of {len(entries)} (expected scheme://..., "
            "e.g. tgram://BOTTOKEN/CHATID)"
        )
    return tuple(Secret(url) for url in entries)


def alert_url_secrets(url: str) -> list[str]:
    """The parts of an alert URL to hide wherever text leaves a process: the URL itself
    and each piece of 8 characters or more that could be a credential (bot tokens, webhook
    tokens, passwords, topics), since a library may echo any of them in an error message.
    Host names, addresses and plain numbers (chat ids) are left out: they are no secret,
    and hiding them would mangle ordinary log lines."""
    _, _, rest = url.partition("://")
    pieces = [
        p for p in _URL_PIECES.split(rest) if len(p) >= 8 and not p.isdigit() and "." not in p
    ]
    password = urlsplit(url).password
    return [url, rest, *pieces, *([password] if password else [])]


def _redis_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"scheme {scheme or '(none)'!r} not supported (use redis://, rediss://, unix://)"
        )
    return value


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def convert(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {'/'.join(schemes)} URL with a host, got {value[:60]!r}")
        return value.rstrip("/") if parts.scheme.startswith("http") else value

    return convert


Number = TypeVar("Number", int, float)


def _in_range(
    parse: Callable[[str], Number], what: str, low: Number, high: Number
) -> Callable[[str], Number]:
    def convert(value: str) -> Number:
        try:
            number = parse(value)
        except ValueError:
            raise ValueError(f"expected {what}, got {value[:30]!r}") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}..{high}")
        return number

    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    return _in_range(lambda value: int(value.replace("_", "")), "an integer", low, high)


def _float_range(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, "a number", low, high)


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {value[:20]!r}")


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        chosen = value.upper() if upper else value.lower()
        if chosen not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value[:20]!r}")
        return chosen

    return convert


def _digits(value: str) -> str:
    if not value.isdigit():
        raise ValueError("expected the numeric Stockbit account id")
    return value


def _prefix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,40}", value):
        raise ValueError("use 1-40 letters, digits or _.:-")
    return value if value.endswith(":") else value + ":"


def _process_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise ValueError("use 1-64 letters, digits or _.-")
    return value


def _host(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", value):
        raise ValueError(f"not a host name or address: {value[:40]!r}")
    return value
