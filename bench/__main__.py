"""``python -m bench [--only NAME ...]``: run the benchmarks and rewrite BENCHMARKS.md."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from bench.report import merge

SUITE = ("codec", "ingest", "writer", "pipeline", "mix", "archive", "parquet")
"""Benchmark modules in report order; each has ``run() -> str`` returning Markdown."""


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and merge their sections into BENCHMARKS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=SUITE, help="run just these sections")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args(argv)
    names = args.only or list(SUITE)
    sections: dict[str, str] = {}
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            print(f"bench: no benchmark module bench/{name}.py yet, skipped", file=sys.stderr)
            continue
        print(f"bench: running {name} ...", file=sys.stderr)
        sections[name] = module.run()
        print(sections[name], file=sys.stderr)
    command = "python -m bench" + (f" --only {' '.join(args.only)}" if args.only else "")
    existing = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(merge(existing, sections, command))
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
