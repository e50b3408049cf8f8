"""Logging set-up shared by every process: text or JSON lines on stderr, secrets scrubbed.

The scrubbing is a last line of defence: code never logs a credential on purpose, but an
exception message from a library (a URL with a password, a header echoed back) could carry
one. Every formatted line, traceback included, has each known secret replaced.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import ClassVar

from pipeline.settings import Settings

HIDDEN = "<hidden>"


class ScrubbingFormatter(logging.Formatter):
    """A formatter that replaces every registered secret in the final text."""

    secrets: ClassVar[set[str]] = set()

    def __init__(self, json_lines: bool, process: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.json_lines = json_lines
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        if self.json_lines:
            payload = {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "level": record.levelname,
                "logger": record.name,
                "process": self.process,
                "msg": record.getMessage(),
            }
            if record.exc_info:
                payload["exc"] = self.formatException(record.exc_info)
            text = json.dumps(payload, ensure_ascii=False)
        else:
            text = super().format(record)
        return scrub(text)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``<hidden>`` (the log lines' filter;
    alert texts go through it too)."""
    # Longest first, so a URL is hidden whole before a piece of it is.
    for secret in sorted(ScrubbingFormatter.secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, HIDDEN)
    return text


def register_secret(value: str | None) -> None:
    """Add a credential learned at run time (a token re-read from its file, a fetched key)."""
    if value and len(value) >= 4:
        ScrubbingFormatter.secrets.add(value)


def configure(settings: Settings, process: str) -> None:
    """Install the stderr handler for ``process`` at the configured level and format."""
    for secret in settings.secrets():
        register_secret(secret)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ScrubbingFormatter(settings.log_format == "json", process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Libraries' debug chatter (frame dumps, apprise's request URLs) could echo credentials
    # and floods the log.
    for noisy in ("websockets", "urllib3", "asyncio", "apprise"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
