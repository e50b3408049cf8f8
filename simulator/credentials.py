"""Access and refresh tokens and websocket keys the simulator issues and checks.

Tokens are JWT-shaped with a real signature: an HMAC-SHA256 of ``header.payload`` keyed by the
simulator's secret, so a token printed by one ``--print-token`` run is accepted by another
simulator started with the same secret. Claims: ``data.uid``, ``iat``, ``exp`` and a random
``jti`` (two tokens minted in the same second differ); refresh tokens also carry
``typ: "refresh"`` and ``sid``, the login session they belong to. Keys are 44-character
base64 strings of 32 random bytes, remembered in memory with the user they were issued to.
Expiry is checked against the real wall clock (the virtual market clock is for exchange
timestamps only).

Refresh follows Stockbit's web app (``stockbit-protocol.md`` §1.2): ``/login/refresh`` with a
refresh token returns a new access token and a new refresh token, and the one presented is
spent — presenting it again is refused and counted as *reuse*. A *re-login* starts a new
session: every refresh token of an earlier one is refused from then on (counted as
*revoked*). Access tokens presented after their ``exp`` are counted (*expired presented*):
a client that renews in time never presents one. Spent tokens and the session live in memory.

Nothing here logs or puts a token or key in an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from stockbit.errors import ProtocolError
from stockbit.token import read_claims

DEFAULT_SECRET = "obpipe-simulator-not-a-secret"
"""The secret used when none is given: fixed, so separate runs accept each other's tokens."""

DEFAULT_USER_ID = 1234567
DEFAULT_TOKEN_TTL = 86_400.0
"""Seconds a minted token lives: 24 h, as Stockbit's access tokens."""
DEFAULT_REFRESH_TTL = 7 * 86_400.0
"""Seconds a refresh token lives: 7 days, as Stockbit's."""
REFRESH = "refresh"


def _signature(secret: str, signing_input: str) -> str:
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _segment(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _mint(secret: str, claims: dict[str, Any]) -> str:
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}"
    return f"{signing_input}.{_signature(secret, signing_input)}"


def _claims(user_id: int, now: float, ttl: float) -> dict[str, Any]:
    return {
        "data": {"uid": user_id},
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": secrets.token_hex(8),
    }


def mint_token(
    secret: str, now: float, user_id: int = DEFAULT_USER_ID, ttl: float = DEFAULT_TOKEN_TTL
) -> str:
    """A signed access token for ``user_id`` issued at ``now`` (epoch seconds), valid for
    ``ttl``."""
    return _mint(secret, _claims(user_id, now, ttl))


def mint_refresh(
    secret: str,
    now: float,
    user_id: int = DEFAULT_USER_ID,
    ttl: float = DEFAULT_REFRESH_TTL,
    session: int = 0,
) -> str:
    """A signed refresh token of login session ``session``."""
    return _mint(secret, {**_claims(user_id, now, ttl), "typ": REFRESH, "sid": session})


def _expired_at(token: str) -> str:
    expires = read_claims(token).expires_at
    return expires.astimezone(UTC).isoformat() if expires else ""


def pair_answer(access: str, refresh: str) -> dict[str, Any]:
    """The JSON ``/login/refresh`` answers with (``stockbit-protocol.md`` §1.2)."""
    return {
        "message": "Successfully refreshed token",
        "data": {
            "access": {"token": access, "expired_at": _expired_at(access)},
            "refresh": {"token": refresh, "expired_at": _expired_at(refresh)},
        },
    }


def mint_pair(
    secret: str,
    now: float,
    user_id: int = DEFAULT_USER_ID,
    *,
    access_ttl: float = DEFAULT_TOKEN_TTL,
    refresh_ttl: float = DEFAULT_REFRESH_TTL,
    session: int = 0,
) -> dict[str, Any]:
    """A fresh pair as the refresh endpoint's JSON (``--print-token --pair``)."""
    return pair_answer(
        mint_token(secret, now, user_id, access_ttl),
        mint_refresh(secret, now, user_id, refresh_ttl, session),
    )


@dataclass
class TokenStats:
    """What happened to the tokens (``/sim/stats``)."""

    refreshes: int = 0
    refresh_refused: int = 0
    refresh_reuse: int = 0
    """Spent refresh tokens presented again (a rotation mistake by the client)."""
    refresh_revoked: int = 0
    """Refresh tokens of a session a re-login ended."""
    refresh_expired: int = 0
    expired_presented: int = 0
    """Access or refresh tokens presented after their ``exp``."""
    revoked_presented: int = 0
    """Access tokens presented after ``--expire-token-after`` revoked them."""
    relogins: int = 0


class Credentials:
    """The simulator's view of who may connect: token checks and the issued-key registry."""

    def __init__(
        self,
        secret: str = DEFAULT_SECRET,
        *,
        access_ttl: float = DEFAULT_TOKEN_TTL,
        refresh_ttl: float = DEFAULT_REFRESH_TTL,
    ) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self._keys: dict[str, str] = {}
        self._revoked: set[str] = set()
        self._spent: set[str] = set()
        self.session = 0
        """The current login session: refresh tokens of older ones are refused."""
        self.stats = TokenStats()

    def mint(
        self, now: float, user_id: int = DEFAULT_USER_ID, ttl: float = DEFAULT_TOKEN_TTL
    ) -> str:
        """A token this instance accepts (see :func:`mint_token`)."""
        return mint_token(self._secret, now, user_id, ttl)

    def _signed(self, token: str) -> dict[str, Any] | None:
        """The payload of a token this simulator signed, or None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _signature(self._secret, f"{parts[0]}.{parts[1]}")
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return None
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def user_of(self, token: str, now: float) -> str | None:
        """The user id a valid access token belongs to, or None (bad signature, a refresh
        token, expired, revoked)."""
        payload = self._signed(token)
        if payload is None or payload.get("typ") == REFRESH:
            return None
        if token in self._revoked:
            self.stats.revoked_presented += 1
            return None
        try:
            claims = read_claims(token)
        except ProtocolError:
            return None
        if claims.user_id is None or claims.expires_at is None:
            return None
        if claims.expires_at.timestamp() <= now:
            self.stats.expired_presented += 1
            return None
        return claims.user_id

    def refresh(self, token: str, now: float) -> tuple[dict[str, Any] | None, str]:
        """``/login/refresh``: a new pair and ``"ok"``, or None and why it was refused
        (``invalid``, ``expired``, ``revoked``, ``reused``). The token presented is spent."""
        payload = self._signed(token)
        if payload is None or payload.get("typ") != REFRESH:
            return self._refuse("invalid")
        try:
            claims = read_claims(token)
        except ProtocolError:
            return self._refuse("invalid")
        jti = str(payload.get("jti", ""))
        if claims.user_id is None or claims.expires_at is None or not jti:
            return self._refuse("invalid")
        if claims.expires_at.timestamp() <= now:
            self.stats.expired_presented += 1
            self.stats.refresh_expired += 1
            return self._refuse("expired")
        if jti in self._spent:
            self.stats.refresh_reuse += 1
            return self._refuse("reused")
        if payload.get("sid") != self.session:
            self.stats.refresh_revoked += 1
            return self._refuse("revoked")
        self._spent.add(jti)
        self.stats.refreshes += 1
        return self._pair(now, int(claims.user_id)), "ok"

    def _refuse(self, why: str) -> tuple[None, str]:
        self.stats.refresh_refused += 1
        return None, why

    def _pair(self, now: float, user_id: int) -> dict[str, Any]:
        return mint_pair(
            self._secret,
            now,
            user_id,
            access_ttl=self.access_ttl,
            refresh_ttl=self.refresh_ttl,
            session=self.session,
        )

    def relogin(self, now: float, user_id: int = DEFAULT_USER_ID) -> dict[str, Any]:
        """A new browser login: every earlier refresh token is refused from now on; the
        answer is the new session's pair (what the browser now holds)."""
        self.session += 1
        self.stats.relogins += 1
        return self._pair(now, user_id)

    def issue_key(self, token: str, now: float) -> str | None:
        """A new websocket key for the token's user, or None when the token is not valid."""
        user = self.user_of(token, now)
        if user is None:
            return None
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        self._keys[key] = user
        return key

    def authorize(
        self, user_id: str | None, key: str | None, token: str | None, now: float
    ) -> bool:
        """True when the token is valid, belongs to ``user_id`` and ``key`` was issued to it."""
        if user_id is None or key is None or token is None:
            return False
        user = self.user_of(token, now)
        return user is not None and user == user_id and self._keys.get(key) == user

    def revoke(self, token: str) -> None:
        """Treat ``token`` as expired from now on (``--expire-token-after``)."""
        self._revoked.add(token)
