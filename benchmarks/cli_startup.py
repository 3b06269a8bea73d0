"""How long the ``gananomaly`` command takes to answer ``--version`` and ``--help``.

Each command runs in a fresh process (the way a user types it), ``--repeats`` times; the
median wall time is reported next to a bare ``python -c pass`` measured in the same run, so
the figure that matters is the difference: what importing and parsing add. Writes
``OUT/cli_startup.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import write_atomic

HERE = Path(__file__).resolve().parent
COMMANDS = (("--version",), ("--help",), ("score", "--help"), ("tabular", "fit", "--help"))


def _entry() -> list[str]:
    exe = shutil.which("gananomaly", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "gananomaly.pipelines.cli"]


def _median_seconds(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return statistics.median(times)


def run(repeats: int = 5) -> dict:
    python = _median_seconds([sys.executable, "-c", "pass"], repeats)
    rows = []
    for args in COMMANDS:
        s = _median_seconds([*_entry(), *args], repeats)
        rows.append({"command": "gananomaly " + " ".join(args), "seconds": s, "over_python_s": s - python})
    return {"repeats": repeats, "python_startup_s": python, "commands": rows}


def markdown(result: dict) -> str:
    lines = ["| command | median s | over `python -c pass` s |", "|---|---:|---:|"]
    lines += [f"| `{r['command']}` | {r['seconds']:.3f} | {r['over_python_s']:.3f} |" for r in result["commands"]]
    lines.append(f"| `python -c pass` (baseline) | {result['python_startup_s']:.3f} | - |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    parser.add_argument("--out", default=str(HERE / "out"), help="directory for cli_startup.json")


def run_args(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    result = run(args.repeats)
    out = Path(args.out)
    write_atomic(out / "cli_startup.json", json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    write_atomic(out / "cli_startup.md", table)
    print(table, end="")
    return 0
