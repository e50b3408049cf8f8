"""One socket's protocol state: authentication, subscription requests, pings (no I/O).

The rules follow the real server as far as it is known (stockbit-protocol.md §1.3, §7):

- every client frame is a ``WebsocketRequest``; one that does not decode ends the connection;
- any request carrying credentials (user id, key, token) authenticates the socket; invalid
  credentials get exactly the 29-byte 401 error frame, after which the socket is *silent*:
  later requests, pings included, are ignored (they do not even count as keepalive);
- a request with a channel replaces the subscription (an empty channel clears it) and needs
  credentials, on the same request or an earlier one;
- a ping gets the pong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from stockbit import request
from stockbit.errors import ProtocolError
from stockbit.messages import UNAUTHORIZED, Channel
from stockbit.wrapper import PONG, encode_error

UNAUTHORIZED_FRAME = encode_error(UNAUTHORIZED, "you are not authorized")
"""``3a 1b 08 91 03 12 16 "you are not authorized"``: 29 bytes."""


@dataclass(slots=True)
class Outcome:
    """What the server must do after one client frame."""

    replies: list[bytes] = field(default_factory=list)
    """Control frames to send now (pong, the 401 error)."""
    channel: Channel | None = None
    """A new subscription to apply (replacing the old one)."""
    refused: bool = False
    """Credentials were rejected: stop all data to this socket."""
    undecodable: bool = False
    """The frame was not a ``WebsocketRequest``: close the socket."""
    pinged: bool = False
    """An application-level ping arrived (keepalive)."""
    new_token: bool = False
    """A token different from the previous one has just authenticated the socket."""


class Authorizer(Protocol):
    """What the session needs from :class:`~simulator.credentials.Credentials`."""

    def authorize(
        self, user_id: str | None, key: str | None, token: str | None, now: float
    ) -> bool:
        """True when the three credentials are valid together."""
        ...


class Session:
    """The protocol state of one connection."""

    def __init__(self, credentials: Authorizer) -> None:
        self._credentials = credentials
        self.token: str | None = None
        """The token that authenticated the socket (never logged)."""
        self.silent = False

    @property
    def authenticated(self) -> bool:
        """True once valid credentials arrived and the socket was not refused since."""
        return self.token is not None and not self.silent

    def receive(self, data: bytes, now: float) -> Outcome:
        """Handle one client frame; ``now`` is wall-clock epoch seconds (token expiry)."""
        if self.silent:
            return Outcome()
        try:
            frame = request.decode(data)
        except ProtocolError:
            return Outcome(undecodable=True)
        outcome = Outcome()
        if frame.user_id is not None or frame.key is not None or frame.access_token is not None:
            if not self._credentials.authorize(frame.user_id, frame.key, frame.access_token, now):
                return self.refuse()
            outcome.new_token = frame.access_token != self.token
            self.token = frame.access_token
        if frame.ping is not None:
            outcome.pinged = True
            outcome.replies.append(PONG)
        if frame.channel is not None:
            if self.token is None:
                return self.refuse()
            outcome.channel = frame.channel
        return outcome

    def refuse(self) -> Outcome:
        """Send the 401 error and go silent (bad credentials or an expired token)."""
        self.silent = True
        return Outcome(replies=[UNAUTHORIZED_FRAME], refused=True)
