"""BENCHMARKS.md assembly: a header about the machine, then one section per benchmark module.

Sections are delimited by HTML comments so that ``python -m bench --only NAME`` can refresh one
section and keep the others as they were last measured.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.embedded_redis import RedisUnavailableError, find_server_binary


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        binary = find_server_binary()
        version = (
            subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
            .stdout.split()[2]
            .removeprefix("v=")
        )
    except (OSError, IndexError, RedisUnavailableError):
        version = "?"
    return (
        f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, redis-server {version}"
    )


def spread(values: Sequence[float], unit: str = "", digits: int = 1) -> str:
    """``median (min–max)`` of repeated runs."""
    fmt = f"{{:,.{digits}f}}"
    med = fmt.format(statistics.median(values))
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    suffix = f" {unit}" if unit else ""
    return f"{med}{suffix} ({lo}–{hi}, n={len(values)})"


def begin(name: str) -> str:
    """The marker that opens a section."""
    return f"<!-- bench:{name} -->"


def end(name: str) -> str:
    """The marker that closes a section."""
    return f"<!-- /bench:{name} -->"


def merge(existing: str, sections: dict[str, str], command: str) -> str:
    """Replace (or append) the given sections in an existing BENCHMARKS.md text."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        "# Benchmarks\n\n"
        "Produced by `make bench` (`python -m bench`); sections can be refreshed one at a time "
        "with `python -m bench --only NAME`. Figures are medians of repeated runs with min–max; "
        "ratios compare against a baseline measured in the same run, because these machines "
        "are noisy.\n"
    )
    body = existing.split("\n", 1)[1] if existing.startswith("# Benchmarks") else ""
    body = re.sub(r"\A.*?(?=<!-- bench:|\Z)", "", body, flags=re.S)
    for name, text in sections.items():
        block = (
            f"{begin(name)}\n{text.rstrip()}\n\n_Measured {now} on {machine()} "
            f"with `{command}`._\n{end(name)}"
        )
        pattern = re.compile(re.escape(begin(name)) + r".*?" + re.escape(end(name)), re.S)
        found = pattern.search(body)
        if found:
            body = body[: found.start()] + block + body[found.end() :]
        else:
            body = body.rstrip() + "\n\n" + block + "\n"
    return header + "\n" + body.lstrip()
