"""The token store: the Stockbit access and refresh tokens together in one file.

Every ingestor reads the same file (``STOCKBIT_TOKEN_FILE``); tokens never go into Redis. The
file is JSON, mode 0600, replaced atomically (a temporary file in the same directory, written
and fsynced, renamed over the old one, the directory fsynced), so a reader never sees half a
file and a crash never loses a rotated refresh token::

    {
      "format": 1,
      "access":  {"token": "<JWT>", "expires_at": "2026-03-03T08:15:00+07:00"},
      "refresh": {"token": "<JWT>", "expires_at": "2026-03-09T08:15:00+07:00",
                  "refused_at": null, "refused": null},
      "fence": 41,
      "saved_at": "2026-03-02T08:15:00+07:00", "saved_by": "ingestor-1", "how": "refresh",
      "refreshed_at": "2026-03-02T08:15:00+07:00", "refreshed_by": "ingestor-1"
    }

``access`` and ``refresh`` have the shape of the ``data`` part of Stockbit's
``/login/refresh`` answer, so that answer (whole, or its ``data``) is a valid file too. The
``expires_at`` texts are for people; the JWTs' own ``exp`` claims are what the code trusts.
``fence`` is the fencing epoch of the refresher that wrote the pair (:mod:`ingestor.refresher`);
``refused`` says the refresh endpoint refused this refresh token (401: revoked by a new login,
or spent elsewhere), so no process tries it again until a new pair is stored.

A file holding one bare access JWT (the format before refresh existed) still works: it is
read as an access token without a refresh token, and nothing ever rewrites it.

Writers: the refresher (:func:`commit_refresh`, :func:`mark_refused`, both compare-and-swap on
the refresh token they spent) and ``obpipe token set`` (:func:`store_pair`). They serialise on
an exclusive ``flock`` of a sidecar lock file (``.<name>.lock`` beside the token file), so a
pair pasted by the operator is never overwritten by a refresh that was in flight.

Every token read here is registered with the log scrubber at once; no message of this module
contains a token.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.log import register_secret
from pipeline.secret import Secret
from stockbit.errors import ProtocolError
from stockbit.timestamps import wib_iso
from stockbit.token import TokenClaims, read_claims

FORMAT = 1
MODE = 0o600
ACCESS = "access"
REFRESH = "refresh"
REFRESH_LIFETIME_HINT_S = 2 * 86_400
"""A lone JWT living longer than this is a refresh token (access tokens live 24 h; refresh
tokens 7 days: ``stockbit-protocol.md`` §1.2)."""

HOW_SET = "token set"
HOW_REFRESH = "refresh"
HOW_REFUSED = "refused"


class TokenError(ValueError):
    """A token file or pasted text that cannot be used; the message never holds a token."""


@dataclass(frozen=True)
class Token:
    """One JWT and what it says about itself."""

    value: Secret
    claims: TokenClaims

    @property
    def expires_at(self) -> datetime | None:
        """The ``exp`` claim."""
        return self.claims.expires_at

    @property
    def issued_at(self) -> datetime | None:
        """The ``iat`` claim."""
        return self.claims.issued_at

    @property
    def lifetime_s(self) -> float | None:
        """``exp - iat`` in seconds, when both are there."""
        if self.claims.expires_at is None or self.claims.issued_at is None:
            return None
        return (self.claims.expires_at - self.claims.issued_at).total_seconds()

    def reveal(self) -> str:
        """The JWT itself, for the one request that sends it."""
        return self.value.reveal()


def token(text: str, what: str = "token") -> Token:
    """Read a JWT's claims (unverified) and register it as a secret; :class:`TokenError` if
    it is not a JWT."""
    value = text.strip()
    register_secret(value)
    try:
        claims = read_claims(value)
    except ProtocolError as exc:
        raise TokenError(f"the {what} is not a readable JWT: {exc}") from None
    return Token(Secret(value), claims)


def _payload(value: str) -> Mapping[str, Any]:
    try:
        part = value.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, binascii.Error, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kind_of(item: Token) -> str:
    """``refresh`` or ``access``: a ``typ``/``token_type`` claim saying ``refresh`` decides;
    otherwise a lifetime over two days means a refresh token."""
    claims = _payload(item.reveal())
    for name in ("typ", "token_type", "type"):
        if str(claims.get(name, "")).lower() == REFRESH:
            return REFRESH
    lifetime = item.lifetime_s
    return REFRESH if lifetime is not None and lifetime > REFRESH_LIFETIME_HINT_S else ACCESS


@dataclass(frozen=True)
class Store:
    """What the token file holds."""

    access: Token | None
    refresh: Token | None
    writable: bool
    """True for the JSON format; a bare-JWT file is read-only (never rewritten)."""
    fence: int = 0
    refused: str | None = None
    """Why the refresh endpoint refused :attr:`refresh` (None while it is usable)."""
    refused_at: str | None = None
    saved_at: str | None = None
    saved_by: str | None = None
    how: str | None = None
    refreshed_at: str | None = None
    """When a refresher last renewed the pair (None if it came from ``token set``)."""
    refreshed_by: str | None = None

    def spent(self, refresh: str) -> bool:
        """True when the file no longer holds ``refresh`` (another process rotated it, or a
        new pair was stored)."""
        return self.refresh is None or self.refresh.reveal() != refresh


def _jwt_of(item: object, what: str) -> str | None:
    if isinstance(item, Mapping):
        item = item.get("token")
    if item is None:
        return None
    if not isinstance(item, str) or item.strip().count(".") != 2:
        raise TokenError(f"the {what} token is not a JWT")
    return item.strip()


def pair_from_json(doc: object) -> tuple[str | None, str | None]:
    """``(access, refresh)`` JWTs from the refresh endpoint's answer, its ``data`` part, or
    a token file; either may be missing. :class:`TokenError` if the shape is wrong."""
    if not isinstance(doc, Mapping):
        raise TokenError("expected a JSON object")
    if ACCESS not in doc and REFRESH not in doc and isinstance(doc.get("data"), Mapping):
        doc = doc["data"]
    assert isinstance(doc, Mapping)
    access = _jwt_of(doc.get(ACCESS), ACCESS)
    refresh = _jwt_of(doc.get(REFRESH), REFRESH)
    if access is None and refresh is None:
        raise TokenError('no "access" or "refresh" token in the JSON')
    return access, refresh


@dataclass(frozen=True)
class Parsed:
    """What ``obpipe token set`` was given."""

    access: Token | None
    refresh: Token | None


def parse_input(text: str) -> Parsed:
    """Parse what the operator pasted: the refresh answer's JSON (or its ``data`` part), two
    JWTs on two lines (access, then refresh), or one JWT (a refresh token if it says so or
    lives over two days, otherwise an access token)."""
    stripped = text.strip()
    if not stripped:
        raise TokenError("nothing to read: paste the JSON, two tokens, or one refresh token")
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError:
            raise TokenError("the input starts like JSON but does not parse") from None
        access, refresh = pair_from_json(doc)
        return Parsed(
            token(access, ACCESS) if access else None,
            token(refresh, REFRESH) if refresh else None,
        )
    words = [w for w in stripped.split() if w.lower() != "bearer"]
    for word in words:
        register_secret(word)
    if len(words) == 1:
        only = token(words[0])
        return Parsed(None, only) if kind_of(only) == REFRESH else Parsed(only, None)
    if len(words) == 2:
        return Parsed(token(words[0], ACCESS), token(words[1], REFRESH))
    raise TokenError(f"expected one or two tokens, got {len(words)} words")


def read_store(path: Path) -> Store:
    """Read the token file (JSON, or a bare access JWT); :class:`TokenError` if it is
    missing, unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenError("no token file yet (store one with `obpipe token set`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file: {type(exc).__name__}") from None
    if not text:
        raise TokenError("the token file is empty")
    if not text.startswith("{"):
        if len(text.split()) != 1:
            raise TokenError("the token file is neither JSON nor one JWT")
        return Store(access=token(text, ACCESS), refresh=None, writable=False)
    try:
        doc = json.loads(text)
    except ValueError:
        raise TokenError("the token file is not valid JSON") from None
    access, refresh = pair_from_json(doc)
    refresh_doc = doc.get(REFRESH) if isinstance(doc.get(REFRESH), Mapping) else {}
    try:
        fence = int(doc.get("fence") or 0)
    except (TypeError, ValueError):
        raise TokenError("the token file's fence is not a number") from None
    return Store(
        access=token(access, ACCESS) if access else None,
        refresh=token(refresh, REFRESH) if refresh else None,
        writable=True,
        fence=fence,
        refused=_text(refresh_doc.get("refused")),
        refused_at=_text(refresh_doc.get("refused_at")),
        saved_at=_text(doc.get("saved_at")),
        saved_by=_text(doc.get("saved_by")),
        how=_text(doc.get("how")),
        refreshed_at=_text(doc.get("refreshed_at")),
        refreshed_by=_text(doc.get("refreshed_by")),
    )


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)[:200]


def secrets_in(path: Path) -> list[str]:
    """The tokens of the file, for a process that must scrub them without using them."""
    try:
        store = read_store(path)
    except TokenError:
        return []
    return [t.reveal() for t in (store.access, store.refresh) if t is not None]


# -- writing -----------------------------------------------------------------------------------


def _stamp(moment: datetime | None) -> str | None:
    return wib_iso(moment) if moment is not None else None


def _document(
    access: Token | None,
    refresh: Token | None,
    *,
    fence: int,
    now: datetime,
    by: str,
    how: str,
    refreshed_at: str | None,
    refreshed_by: str | None,
    refused: str | None = None,
    refused_at: str | None = None,
) -> str:
    doc: dict[str, Any] = {"format": FORMAT}
    if access is not None:
        doc[ACCESS] = {"token": access.reveal(), "expires_at": _stamp(access.expires_at)}
    if refresh is not None:
        doc[REFRESH] = {
            "token": refresh.reveal(),
            "expires_at": _stamp(refresh.expires_at),
            "refused_at": refused_at,
            "refused": refused,
        }
    doc.update(
        fence=fence,
        saved_at=wib_iso(now),
        saved_by=by,
        how=how,
        refreshed_at=refreshed_at,
        refreshed_by=refreshed_by,
    )
    return json.dumps(doc, indent=2) + "\n"


def lock_path(path: Path) -> Path:
    """The sidecar file whose ``flock`` serialises the writers of ``path``."""
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive write lock of the token file ``path`` (blocking)."""
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temporary file (0600) in the same directory, fsync,
    rename, fsync of the directory. A crash leaves the old file or the new one, whole."""
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), MODE)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _current(path: Path) -> Store | None:
    try:
        return read_store(path)
    except TokenError:
        return None


def store_pair(path: Path, access: Token, refresh: Token | None, *, now: datetime, by: str) -> None:
    """Store a new pair (``obpipe token set``), creating the file if needed. The fence of the
    file it replaces is kept, so a refresher still in flight cannot overwrite it."""
    with locked(path):
        old = _current(path)
        text = _document(
            access,
            refresh,
            fence=old.fence if old is not None else 0,
            now=now,
            by=by,
            how=HOW_SET,
            refreshed_at=None,
            refreshed_by=None,
        )
        write_atomically(path, text)


def commit_refresh(
    path: Path, spent: str, access: Token, refresh: Token, *, fence: int, now: datetime, by: str
) -> bool:
    """Store the pair a refresh of ``spent`` returned, unless the file moved on meanwhile
    (its refresh token is no longer ``spent``, or a refresher with a newer fence wrote it).
    Returns whether it was written (written and fsynced before anyone can use it)."""
    with locked(path):
        old = _current(path)
        if old is None or not old.writable or old.spent(spent) or old.fence > fence:
            return False
        stamp = wib_iso(now)
        write_atomically(
            path,
            _document(
                access,
                refresh,
                fence=fence,
                now=now,
                by=by,
                how=HOW_REFRESH,
                refreshed_at=stamp,
                refreshed_by=by,
            ),
        )
        return True


def mark_refused(path: Path, spent: str, reason: str, *, now: datetime, by: str) -> bool:
    """Record that the refresh endpoint refused ``spent`` (if the file still holds it), so
    that no process retries it; the access token stays usable until it expires."""
    with locked(path):
        old = _current(path)
        if old is None or not old.writable or old.spent(spent) or old.refused:
            return False
        write_atomically(
            path,
            _document(
                old.access,
                old.refresh,
                fence=old.fence,
                now=now,
                by=by,
                how=HOW_REFUSED,
                refreshed_at=old.refreshed_at,
                refreshed_by=old.refreshed_by,
                refused=reason[:200],
                refused_at=wib_iso(now),
            ),
        )
        return True
