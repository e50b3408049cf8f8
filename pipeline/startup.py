"""The common start of every process: settings read once, logging configured, or a clear exit."""

from __future__ import annotations

import sys

from pipeline.log import configure
from pipeline.settings import Settings, SettingsError

EXIT_CONFIG = 2


def boot(process: str) -> Settings:
    """Read the environment and set up logging for ``process``.

    On invalid configuration, print the one message that names every bad variable and exit
    with status 2 — before any connection is attempted.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"{process}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure(settings, process)
    return settings
