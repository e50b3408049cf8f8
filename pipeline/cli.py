"""The ``obpipe`` console script: one subcommand per process or task.

Each subcommand hands the rest of the command line to the ``main(argv)`` of the module that
owns it, so ``obpipe ingest`` and ``python -m ingestor`` are the same program.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.supervisor", "run the whole pipeline on this machine (embedded Redis)"),
    "ingest": ("ingestor.service", "websocket session(s) -> Redis Streams"),
    "write": ("writer.service", "Redis Streams -> daily CSV files"),
    "web": ("web.service", "status page and JSON API"),
    "simulate": ("simulator.service", "a Stockbit-compatible feed server"),
    "jobs": ("writer.worker", "RQ worker for end-of-day jobs"),
    "status": ("pipeline.status", "print the live state from Redis"),
    "tickers": ("pipeline.tickers_command", "show or change the desired ticker set"),
    "finalize": ("writer.finalize_command", "verify and summarise a finished day"),
}


def usage() -> str:
    """The help text listing every subcommand."""
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return (
        "usage: obpipe <command> [options]\n\ncommands:\n"
        + "\n".join(lines)
        + (
            "\n\n`obpipe <command> --help` describes each command's options; the environment "
            "variables are listed in README.md and .env.example."
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``obpipe <command> ...``; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    entry = COMMANDS.get(command)
    if entry is None:
        print(f"obpipe: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(entry[0])
    except ModuleNotFoundError as exc:
        if exc.name and entry[0].startswith(exc.name):
            print(f"obpipe: {command!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
