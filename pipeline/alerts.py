"""Alerts, pure: conditions, the start → reminder → clear state machine, the rate limit.

A *condition* is something wrong right now ("ingestor x is gone", "the token was refused"),
named by a stable id. The monitor (:mod:`jobs.monitor`) works out the set of active
conditions every few seconds and hands it to :class:`Alerter`, which decides what to say:

* a condition that appears → one ``start`` alert;
* while it stays → nothing, except a ``reminder`` every ``repeat_s`` for **critical** ones
  (a warning is said once: repeating it would teach the operator to ignore the channel);
* when it goes → one ``clear`` alert ("resolved after 12m 5s");
* an *event* (a gap that is already over when it is recorded) → one ``event`` alert.

Everything goes through one rate limit (``max_per_window`` notifications per ``window_s``),
so a flapping condition or a cascade (Redis restart: every process at once) cannot flood a
phone. Alerts over the limit are never dropped: they are held, and when the limit allows,
what is held is sent as it is or, if there is more than fits, folded into one ``digest``
that lists every one of them.

Nothing here reads the clock, Redis or the environment: the time is passed in, so the whole
machine is tested with a fake clock. Text is built only from the facts a condition carries,
and every title and detail passes through ``scrub`` (the log scrubber plus the alert
patterns of :func:`scrub_patterns`) before it becomes an alert, as a second line of defence
against a credential that a library echoed into an error message.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pipeline.days import WIB

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
"""For notices that report rather than warn (the daily recap): sent once, never repeated."""
SEVERITIES = (CRITICAL, WARNING, INFO)

START = "start"
REMINDER = "reminder"
CLEAR = "clear"
EVENT = "event"
DIGEST = "digest"
KINDS = (START, REMINDER, CLEAR, EVENT, DIGEST)

MAX_TITLE = 160
MAX_DETAIL = 1000
DIGEST_LINES = 20
"""How many held alerts a digest names one by one (the rest are counted)."""

_ID = re.compile(r"[a-z0-9][a-z0-9_.:@-]{0,159}\Z")
HIDDEN = "<hidden>"

# Second line of defence, for credentials this process was never told about (a token the
# refresher renewed in another process, a key fetched by an ingestor): anything shaped like
# a JWT, the password of a URL, a Bearer header value, a long random key.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s@/]+@")
_BEARER = re.compile(r"(?i)(?P<head>bearer\s+)[^\s,;]+")
_KEYLIKE = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


class AlertError(ValueError):
    """A condition with an invalid id, severity or text."""


def check_condition_id(text: str) -> str:
    """``text`` if it is a valid condition id: lower-case letters, digits and ``_.:@-``,
    at most 160 characters, starting with a letter or digit. Raises :class:`AlertError`."""
    if not isinstance(text, str) or not _ID.match(text):
        raise AlertError(
            f"invalid condition id {str(text)[:40]!r}: use lower-case letters, digits and _.:@-"
        )
    return text


def _keylike(match: re.Match[str]) -> str:
    word = match[0]
    has_digit = any(c.isdigit() for c in word)
    has_letter = any(c.isalpha() for c in word)
    return HIDDEN if has_digit and has_letter else word


def scrub_patterns(text: str) -> str:
    """Hide JWT-shaped strings, URL passwords, Bearer values and key-like runs (32 or more
    base64 characters mixing letters and digits, as a websocket key or a bot token) in
    ``text``."""
    text = _JWT.sub(HIDDEN, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{HIDDEN}", text)
    return _KEYLIKE.sub(_keylike, text)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Condition:
    """Something wrong now. ``title`` and ``detail`` must be built from non-secret facts."""

    id: str
    severity: str
    title: str
    detail: str = ""

    def __post_init__(self) -> None:
        check_condition_id(self.id)
        if self.severity not in SEVERITIES:
            raise AlertError(f"severity must be one of {', '.join(SEVERITIES)}")
        if not self.title.strip():
            raise AlertError("a condition needs a title")


def wib(moment: datetime) -> str:
    """``2026-03-02 10:01:02 WIB`` — how alert texts write an instant."""
    return moment.astimezone(WIB).strftime("%Y-%m-%d %H:%M:%S WIB")


def duration(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 4m``, ``2d 5h``."""
    s = max(0, int(seconds))
    days, hours, minutes, secs = s // 86400, s % 86400 // 3600, s % 3600 // 60, s % 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


@dataclass(frozen=True)
class Alert:
    """One thing to tell the operator (and to list on the status page)."""

    key: str
    """Unique id of this alert (``<ms>-<n>``): the delivery state is recorded under it."""
    condition: str
    kind: str
    severity: str
    title: str
    detail: str
    at: datetime
    started_at: datetime
    cleared_at: datetime | None = None
    note: str = ""
    """Why a clear happened, when it is not simply "the trouble went away"."""
    items: tuple[Alert, ...] = ()
    """The held alerts a digest carries."""

    @property
    def subject(self) -> str:
        """The notification's title: ``obpipe CRITICAL: ingestor x is gone``."""
        label = {
            START: self.severity.upper(),
            EVENT: self.severity.upper(),
            REMINDER: f"{self.severity.upper()} (still)",
            CLEAR: "RESOLVED",
            DIGEST: self.severity.upper(),
        }[self.kind]
        return f"obpipe {label}: {self.title}"

    @property
    def body(self) -> str:
        """The notification's text: the facts, and when."""
        lines = [self.detail] if self.detail else []
        if self.kind == START:
            lines.append(f"Since {wib(self.started_at)}.")
        elif self.kind == REMINDER:
            held = duration((self.at - self.started_at).total_seconds())
            lines.append(f"Still active after {held} (since {wib(self.started_at)}).")
        elif self.kind == CLEAR:
            end = self.cleared_at or self.at
            lasted = duration((end - self.started_at).total_seconds())
            lines.append(f"Resolved after {lasted} ({wib(self.started_at)} to {wib(end)}).")
            if self.note:
                lines.append(self.note)
        elif self.kind == EVENT:
            lines.append(f"Recorded {wib(self.at)}.")
        elif self.kind == DIGEST:
            lines = [f"{len(self.items)} alerts were held back by the rate limit:"]
            for item in self.items[:DIGEST_LINES]:
                lines.append(f"- {wib(item.at)} {item.subject.removeprefix('obpipe ')}")
            if len(self.items) > DIGEST_LINES:
                lines.append(f"- and {len(self.items) - DIGEST_LINES} more (see the status page)")
        return "\n".join(lines)

    def fields(self) -> dict[str, str]:
        """The ``alerts`` stream entry (flat strings; the status page reads these)."""
        return {
            "key": self.key,
            "condition": self.condition,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "subject": self.subject,
            "body": self.body,
            "at": self.at.isoformat(),
            "started_at": self.started_at.isoformat(),
            "cleared_at": self.cleared_at.isoformat() if self.cleared_at else "",
            "items": ",".join(item.key for item in self.items),
        }


@dataclass
class Active:
    """The state of one active condition: since when, and when it was last notified."""

    condition: Condition
    since: datetime
    notified_at: datetime
    reminders: int = 0

    def to_json(self) -> str:
        """For the ``alerts:active`` hash, so a restarted (or another) monitor carries on."""
        return json.dumps(
            {
                "severity": self.condition.severity,
                "title": self.condition.title,
                "detail": self.condition.detail,
                "since": self.since.isoformat(),
                "notified_at": self.notified_at.isoformat(),
                "reminders": self.reminders,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, condition_id: str, text: str) -> Active:
        """Read back :meth:`to_json`; :class:`AlertError` (or ``ValueError``) if malformed."""
        data: dict[str, Any] = json.loads(text)
        condition = Condition(
            condition_id, str(data["severity"]), str(data["title"]), str(data.get("detail", ""))
        )
        return cls(
            condition,
            since=datetime.fromisoformat(data["since"]),
            notified_at=datetime.fromisoformat(data["notified_at"]),
            reminders=int(data.get("reminders", 0)),
        )


@dataclass
class Update:
    """What one :meth:`Alerter.update` produced."""

    created: list[Alert] = field(default_factory=list)
    """Every new alert, in order (record them all: the page lists each)."""
    deliver: list[Alert] = field(default_factory=list)
    """What to send now: single alerts and at most one digest."""
    held: list[Alert] = field(default_factory=list)
    """New alerts the rate limit keeps back for now (sent later, alone or in a digest)."""
    coalesced: list[Alert] = field(default_factory=list)
    """Alerts folded into a digest in :attr:`deliver` (their own notification is not sent)."""
    changed: bool = False
    """Whether the set of active conditions (or their state) changed: persist it."""


def _identity(text: str) -> str:
    return text


class Alerter:
    """The state machine and the rate limit. Not thread-safe: one monitor owns it."""

    def __init__(
        self,
        *,
        repeat_s: float,
        max_per_window: int = 6,
        window_s: float = 60.0,
        scrub: Callable[[str], str] = _identity,
        tag: str = "",
    ) -> None:
        """``repeat_s``: reminder period of critical conditions (0 = no reminders);
        ``max_per_window`` notifications per ``window_s`` at most (a digest counts as one);
        ``scrub`` is applied to every title and detail (plus :func:`scrub_patterns`);
        ``tag`` goes into every alert key, so keys of two monitor lifetimes never clash."""
        if max_per_window < 1:
            raise ValueError("max_per_window must be at least 1")
        self.repeat_s = repeat_s
        self.max_per_window = max_per_window
        self.window_s = window_s
        self._scrub = scrub
        self.active: dict[str, Active] = {}
        self._sent: deque[datetime] = deque()
        self._held: deque[Alert] = deque()
        self._seq = 0
        self._tag = tag

    # -- state ---------------------------------------------------------------------------

    def restore(self, states: Iterable[Active]) -> None:
        """Continue from persisted state (a restart, or another monitor taking over)."""
        self.active = {state.condition.id: state for state in states}

    @property
    def held(self) -> int:
        """How many alerts wait for the rate limit."""
        return len(self._held)

    # -- the machine ---------------------------------------------------------------------

    def update(
        self,
        now: datetime,
        conditions: Iterable[Condition],
        *,
        events: Iterable[Condition] = (),
        notes: Mapping[str, str] | None = None,
    ) -> Update:
        """Compare the conditions active at ``now`` with the last call's; return the alerts.

        ``conditions`` is the complete set active now (a missing one is cleared). ``notes``
        may give a cleared condition the reason it ended ("replaced by ...").
        """
        out = Update()
        current: dict[str, Condition] = {}
        for condition in conditions:
            current[condition.id] = self._clean(condition)
        for cid, condition in current.items():
            state = self.active.get(cid)
            if state is None:
                self.active[cid] = Active(condition, since=now, notified_at=now)
                out.created.append(self._alert(condition, START, now, now))
                out.changed = True
                continue
            if state.condition != condition:
                state.condition = condition
                out.changed = True
            if (
                condition.severity == CRITICAL
                and self.repeat_s > 0
                and (now - state.notified_at).total_seconds() >= self.repeat_s
            ):
                state.notified_at = now
                state.reminders += 1
                out.created.append(self._alert(condition, REMINDER, now, state.since))
                out.changed = True
        for cid in [c for c in self.active if c not in current]:
            state = self.active.pop(cid)
            note = self._scrub_text((notes or {}).get(cid, ""), MAX_DETAIL)
            out.created.append(
                self._alert(state.condition, CLEAR, now, state.since, cleared_at=now, note=note)
            )
            out.changed = True
        for event in events:
            clean = self._clean(event)
            out.created.append(self._alert(clean, EVENT, now, now))
        self._held.extend(out.created)
        self._release(now, out)
        waiting = {alert.key for alert in self._held}
        out.held = [alert for alert in out.created if alert.key in waiting]
        return out

    def flush(self, now: datetime) -> Update:
        """Release what the rate limit now allows, without new conditions."""
        out = Update()
        self._release(now, out)
        return out

    def _release(self, now: datetime, out: Update) -> None:
        horizon = now - timedelta(seconds=self.window_s)
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        budget = self.max_per_window - len(self._sent)
        if budget <= 0 or not self._held:
            return
        if len(self._held) <= budget:
            while self._held:
                out.deliver.append(self._held.popleft())
                self._sent.append(now)
            return
        for _ in range(budget - 1):
            out.deliver.append(self._held.popleft())
            self._sent.append(now)
        items = tuple(self._held)
        self._held.clear()
        out.coalesced.extend(items)
        severities = {i.severity for i in items}
        severity = next((s for s in SEVERITIES if s in severities), WARNING)
        out.deliver.append(
            Alert(
                key=self._key(now),
                condition="digest",
                kind=DIGEST,
                severity=severity,
                title=f"{len(items)} more alerts (rate limit)",
                detail="",
                at=now,
                started_at=min(i.at for i in items),
                items=items,
            )
        )
        self._sent.append(now)

    # -- helpers -------------------------------------------------------------------------

    def _scrub_text(self, text: str, limit: int) -> str:
        return _clip(scrub_patterns(self._scrub(text)), limit)

    def _clean(self, condition: Condition) -> Condition:
        return replace(
            condition,
            title=self._scrub_text(condition.title, MAX_TITLE) or condition.id,
            detail=self._scrub_text(condition.detail, MAX_DETAIL),
        )

    def _key(self, now: datetime) -> str:
        self._seq += 1
        return f"{int(now.timestamp() * 1000)}-{self._tag}{self._seq}"

    def _alert(
        self,
        condition: Condition,
        kind: str,
        now: datetime,
        since: datetime,
        *,
        cleared_at: datetime | None = None,
        note: str = "",
    ) -> Alert:
        return Alert(
            key=self._key(now),
            condition=condition.id,
            kind=kind,
            severity=condition.severity,
            title=condition.title,
            detail=condition.detail,
            at=now,
            started_at=since,
            cleared_at=cleared_at,
            note=note,
        )
