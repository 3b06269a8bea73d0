"""``python -m benchmarks run [--quick] [--out DIR]``: quality and speed against the peers.

``python -m benchmarks gpu [--out DIR] [--dry-run] [--budget-s 480]``: the prepared GPU
check (see :mod:`benchmarks.gpu`); writes ``gpu.json`` and ``GPU.md``.

``python -m benchmarks scoring [--rows N] [--threads 1,2]``: scoring rows/s against
IsolationForest by thread count, split over the score's parts (see
:mod:`benchmarks.scoring_speed`).

Prints a table as it goes, writes ``results.json`` to ``--out`` (default
``benchmarks/out``) and regenerates ``RESULTS.md`` (by default ``benchmarks/RESULTS.md``
for a full run and ``DIR/RESULTS.md`` for ``--quick``, so a quick run never overwrites the
published results).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

from benchmarks import contestants as _contestants
from benchmarks import datasets as _datasets
from benchmarks import gpu as _gpu
from benchmarks import quality as _quality
from benchmarks import report as _report
from benchmarks import scoring_speed as _scoring_speed
from benchmarks import speed as _speed

HERE = Path(__file__).resolve().parent

# Run sizes. Quick: a smoke test of the whole harness in a few minutes on two cores.
QUICK = {
    "seeds": 2, "speed_sizes": (1_000, 10_000, 100_000), "fit_sizes": (1_000,), "memory_sizes": (100_000,),
    "refine_rows": (2_000, 50), "peer_epochs": {"ALAD": 10, "AnoGAN": 10, "MO_GAAL": 6},
    "peer_max_seeds": {"AnoGAN": 1}, "peer_datasets": {"AnoGAN": ["wine"]}, "sweep": False,
}
FULL = {
    "seeds": 5, "speed_sizes": (1_000, 10_000, 100_000, 1_000_000), "fit_sizes": (1_000, 10_000, 100_000),
    "memory_sizes": (100_000, 1_000_000), "refine_rows": (10_000, 50),
    "peer_epochs": {"ALAD": None, "AnoGAN": None, "MO_GAAL": None}, "peer_max_seeds": {},
    "peer_datasets": {"AnoGAN": list(_datasets.REAL)}, "sweep": True,
}


def _write_atomic(path: Path, text: str) -> None:
    """Write whole or not at all: a temporary name in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _notes() -> str:
    """Hand-written findings (benchmarks/NOTES.md), appended to RESULTS.md when present."""
    path = HERE / "NOTES.md"
    return path.read_text() if path.exists() else ""


def _git_revision() -> str | None:
    """The commit of the working tree, with ``+dirty`` when it has uncommitted changes."""
    import subprocess

    try:
        root = HERE.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gananomaly"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) or None


def _meta(args: argparse.Namespace, plan: dict) -> dict:
    import sklearn
    import torch

    try:
        import pyod

        pyod_version = pyod.__version__
    except ImportError:
        pyod_version = None
    import gananomaly

    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": bool(args.quick),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + ("CUDA: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"),
        "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "sklearn": sklearn.__version__, "pyod": pyod_version, "gananomaly": gananomaly.__version__,
        "git": _git_revision(),
        "load_average_at_start": list(os.getloadavg()),
        "seeds": list(range(args.seed_start, args.seed_start + plan["seeds"])),
        "peer_epochs": {k: (v if v is not None else "default") for k, v in plan["peer_epochs"].items()},
        "peer_max_seeds": {k: v for k, v in plan["peer_max_seeds"].items() if v is not None},
        "peer_datasets": {k: v for k, v in plan["peer_datasets"].items() if v is not None},
        "note": args.note,
    }


def run(args: argparse.Namespace) -> dict:
    plan = dict(QUICK if args.quick else FULL)
    if args.seeds is not None:
        plan["seeds"] = args.seeds
    if args.peer_epochs is not None:
        plan["peer_epochs"] = {k: args.peer_epochs for k in plan["peer_epochs"]}
    _contestants.PEER_EPOCHS.update(plan["peer_epochs"])
    names = args.datasets.split(",") if args.datasets else _datasets.names(args.quick)
    seeds = list(range(args.seed_start, args.seed_start + plan["seeds"]))
    if args.no_sweep:
        plan["sweep"] = False
    started = time.monotonic()
    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else None

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {msg}", flush=True)

    results: dict = {"meta": _meta(args, plan)}
    say(f"machine: {results['meta']['machine']}; load average {results['meta']['load_average_at_start']}")

    quality_out: dict = {}

    def quality_job() -> None:
        options = {"quick": bool(args.quick), "sweep": plan["sweep"], "peer_epochs": plan["peer_epochs"],
                   "peer_max_seeds": plan["peer_max_seeds"], "peer_datasets": plan["peer_datasets"],
                   "only": args.contestants.split(",") if args.contestants else None}
        n_entrants = len(_contestants.contestants(quick=args.quick, sweep=plan["sweep"]))
        say(f"quality: {len(names)} data sets x {len(seeds)} seeds x {n_entrants} contestants, {args.jobs} worker(s)")
        quality_out.update(_quality.run_quality(names, seeds, options, jobs=args.jobs, progress=say,
                                                deadline=deadline))

    # With worker processes the quality runs go on while this process measures speed (the
    # speed ratios compare ours and IsolationForest under the same load).
    worker = None
    if not args.skip_quality:
        if args.jobs > 1:
            worker = threading.Thread(target=quality_job, name="quality")
            worker.start()
        else:
            quality_job()
    if not args.skip_speed:
        say("speed: fit and scoring against IsolationForest")
        results["speed"] = _speed.run_speed(plan["speed_sizes"], plan["fit_sizes"], args.threads, progress=say)
        results["refinement"] = _speed.run_refinement(*plan["refine_rows"], args.threads, progress=say)
        results["memory"] = _speed.run_memory(plan["memory_sizes"], args.threads, progress=say)
    if worker is not None:
        worker.join()
    if not args.skip_quality:
        q = quality_out or {"datasets": [], "runs": [], "errors": [{"dataset": "*", "seed": -1, "contestant": "*",
                                                                  "error": "the quality runs failed (see the log)"}]}
        summary = _quality.summarise(q["runs"])
        real = [n for n in names if n in _datasets.REAL]
        generated = [n for n in names if n in _datasets.GENERATED]
        results["quality"] = {
            **q, "summary": summary,
            "leaderboard_real": _quality.leaderboard(summary, real) if real else [],
            "leaderboard_generated": _quality.leaderboard(summary, generated) if generated else [],
            "real_datasets": real, "generated_datasets": generated,
        }
    results["gpu"] = _speed.gpu_section()
    say(f"GPU: {results['gpu'].get('note', 'measured')}")

    results["meta"]["elapsed_s"] = time.monotonic() - started
    results["targets"] = _report.targets(results)
    out = Path(args.out)
    _write_atomic(out / "results.json", json.dumps(results, indent=1, default=float))
    md = _report.markdown(results, _notes())
    md_path = Path(args.results_md) if args.results_md else (out / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
    _write_atomic(md_path, md)
    print()
    print(_report.console(results))
    say(f"wrote {out / 'results.json'} and {md_path}")
    return results


def merge(parts: list[dict]) -> dict:
    """Merge results of runs split over processes (e.g. by ``--seed-start``): quality runs
    are united (the first part wins on duplicates) and re-aggregated; every other section
    comes from the first part that has it."""
    results = {k: v for k, v in parts[0].items() if k != "quality"}
    for part in parts[1:]:
        for key, value in part.items():
            if key not in results and key != "quality":
                results[key] = value
    quality = [p["quality"] for p in parts if p.get("quality")]
    measures = {r.get("gen_fidelity_measure", 1) for q in quality for r in q["runs"] if "gen_fidelity" in r}
    if len(measures) > 1:
        raise ValueError(f"these results measured the generator's fidelity by different definitions "
                         f"(versions {sorted(measures)} of gananomaly.fidelity.MEASURE_VERSION) and cannot be "
                         "merged: rerun the older part")
    if quality:
        seen: set = set()
        runs, errors, datasets = [], [], {}
        for q in quality:
            for r in q["runs"]:
                key = (r["dataset"], r["seed"], r["contestant"], r["column"])
                if key not in seen:
                    seen.add(key)
                    runs.append(r)
            errors += q["errors"]
            for d in q["datasets"]:
                datasets.setdefault(d["name"], d)
        done = {(r["dataset"], r["seed"], r["contestant"]) for r in runs}
        errors = [e for e in errors if (e["dataset"], e["seed"], e["contestant"]) not in done]
        real = list(dict.fromkeys(n for q in quality for n in q["real_datasets"]))
        generated = list(dict.fromkeys(n for q in quality for n in q["generated_datasets"]))
        summary = _quality.summarise(runs)
        results["quality"] = {
            "datasets": list(datasets.values()), "runs": runs, "errors": errors, "summary": summary,
            "leaderboard_real": _quality.leaderboard(summary, real) if real else [],
            "leaderboard_generated": _quality.leaderboard(summary, generated) if generated else [],
            "real_datasets": real, "generated_datasets": generated,
        }
        results["meta"] = dict(results["meta"], seeds=sorted({r["seed"] for r in runs}))
    return results


def rerender(args: argparse.Namespace) -> None:
    """Regenerate RESULTS.md (and the targets) from one or more results.json files."""
    results = merge([json.loads(Path(p).read_text()) for p in args.results])
    results["targets"] = _report.targets(results)
    if args.out_json:
        _write_atomic(Path(args.out_json), json.dumps(results, indent=1, default=float))
    md_path = Path(args.results_md) if args.results_md else HERE / "RESULTS.md"
    _write_atomic(md_path, _report.markdown(results, _notes()))
    print(_report.console(results))
    print(f"wrote {md_path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the benchmark")
    p.add_argument("--quick", action="store_true", help="fewer seeds, data sets and sizes (a few minutes)")
    p.add_argument("--out", default=str(HERE / "out"), help="directory for results.json (default: benchmarks/out)")
    p.add_argument("--results-md", default=None, help="where to write RESULTS.md")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the plan)")
    p.add_argument("--seed-start", type=int, default=0, help="first seed (to split a run over processes)")
    p.add_argument("--no-sweep", action="store_true", help="leave out the epoch and network-size probes")
    p.add_argument("--datasets", default=None, help="comma-separated data set names (default: all, or the quick set)")
    p.add_argument("--contestants", default=None,
                   help="comma-separated name fragments: run only contestants whose name contains one "
                        "(=NAME: that name exactly) "
                        "(e.g. 'ours,IsolationForest'); to split a run, merged with 'report'")
    p.add_argument("--peer-epochs", type=int, default=None, help="cap the epochs of PyOD's GAN detectors")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="skip the remaining quality fits once this much time has passed (recorded as skipped)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for the speed runs, ours (torch) and IsolationForest (n_jobs) alike (default 1)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes for the quality runs, one single-threaded fit each (default: 2)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--note", default="", help="free text recorded in the results (e.g. machine load)")
    r = sub.add_parser("report", help="regenerate RESULTS.md from a results.json")
    r.add_argument("results", nargs="+", help="results.json file(s); several are merged")
    r.add_argument("--out-json", default=None, help="also write the merged results here")
    r.add_argument("--results-md", default=None, help="where to write RESULTS.md (default: benchmarks/RESULTS.md)")
    g = sub.add_parser("gpu", help="the prepared GPU check (a dry run on the CPU without CUDA)")
    _gpu.add_arguments(g)
    _scoring_speed.add_arguments(sub.add_parser("scoring", help="scoring rows/s against IsolationForest by threads"))
    from benchmarks import batch as _batch

    _batch.add_arguments(sub.add_parser("batch", help="gananomaly score on Parquet vs pandas + IsolationForest"))
    from benchmarks import cli_startup as _cli

    _cli.add_arguments(sub.add_parser("cli", help="gananomaly --version/--help wall time in fresh processes"))
    args = parser.parse_args(argv)
    if args.command == "cli":
        return _cli.run_args(args)
    if args.command == "batch":
        return _batch.run_args(args)
    if args.command == "gpu":
        return _gpu.run_args(args)
    if args.command == "scoring":
        return _scoring_speed.run_args(args)
    if args.command == "run":
        run(args)
    elif args.command == "report":
        rerender(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
