"""Batch scoring throughput and memory: ``gananomaly score`` on a Parquet file against the
plain baseline "pandas reads the file, a StandardScaler (+ one-hot) + IsolationForest
pipeline scores it, pandas writes Parquet".

``python -m benchmarks batch [--sizes 100000,1000000,10000000] [--chunk-rows 50000]
[--out DIR] [--md PATH] [--profile]``: for every size a file of ``size`` rows x 20 numeric
and 2 categorical columns (plus an ID) is generated in blocks; both contestants are fitted
on the same 2,000 rows and each scores the file in a fresh Python process, which reports
its seconds and peak resident memory (``ru_maxrss``). The input is deleted after each size.
Writes ``batch.json`` under ``--out`` and a Markdown table to ``--md``. ``--profile``
also splits our job's time over its parts (reading, validation, preprocessing, networks,
writing) with cProfile in a third process (for sizes up to ``PROFILE_MAX_ROWS``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["benchmark_batch_score", "run_batch", "markdown", "add_arguments", "run_args", "PROFILE_PARTS"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
N_FEATURES, N_CATEGORICAL, FIT_ROWS = 20, 2, 2000
CATEGORIES = ("a", "b", "c", "d")
#: ``--profile`` runs a third, profiled job: only for files up to this many rows.
PROFILE_MAX_ROWS = 1_000_000
#: The parts of our job's time and the functions whose cumulative time makes them up.
PROFILE_PARTS = {
    "reading": ("parquet_chunks", "csv_chunks"),
    "validation": ("prepare_frame", "_unscorable_values", "_unseen", "_nonfinite_scores"),
    "preprocessing": ("_transform",),
    "networks": ("score_table",),
    "explain": ("top_columns",),
    "writing": ("commit_part", "assemble"),
    "input hash": ("content_hash",),
}


# ---------------------------------------------------------------------------------- data
def generate_block(n: int, offset: int, rng: np.random.RandomState, n_features: int = N_FEATURES,
                   n_categorical: int = N_CATEGORICAL) -> pd.DataFrame:
    """``n`` rows: ``row_id`` from ``offset``, ``x0..`` standard normal, ``c0..`` categories."""
    data: dict[str, Any] = {"row_id": np.arange(offset, offset + n)}
    for j in range(n_features):
        data[f"x{j}"] = rng.randn(n)
    for j in range(n_categorical):
        data[f"c{j}"] = rng.choice(CATEGORIES, size=n)
    return pd.DataFrame(data)


def write_generated(path: Path, fmt: str, n_rows: int, block: Callable[[int, int], pd.DataFrame],
                    block_rows: int = 100_000) -> None:
    """Write ``n_rows`` rows made by ``block(n, offset)`` to ``path``, one block at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    with open(path, "w", encoding="utf-8", newline="") if fmt == "csv" else contextlib.nullcontext() as fh:
        for i, offset in enumerate(range(0, n_rows, block_rows)):
            df = block(min(block_rows, n_rows - offset), offset)
            if fmt == "csv":
                df.to_csv(fh, header=i == 0, index=False)
            else:
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
    if writer is not None:
        writer.close()


def fit_models(root: Path, *, n_features: int = N_FEATURES, n_categorical: int = N_CATEGORICAL,
               detector: dict[str, Any] | None = None, random_state: int = 0) -> tuple[Path, Path]:
    """Fit our tabular pipeline and the baseline on the same rows; (our model dir, baseline pickle)."""
    import pickle

    from gananomaly.pipelines.table_config import TabularConfig
    from gananomaly.pipelines.table_data import prepare_frame, schema_of
    from gananomaly.pipelines.tabular import build_pipeline
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from gananomaly.persistence import save

    train = generate_block(FIT_ROWS, 0, np.random.RandomState(random_state), n_features, n_categorical)
    cfg = TabularConfig(name="bench", builtin="mixed", id_columns=["row_id"], mlflow=False,
                        detector={"epochs": 3, "random_state": random_state, "device": "cpu", **(detector or {})})
    pipe = build_pipeline(cfg, train)
    X, _, _ = prepare_frame(train, schema_of(cfg, train))
    pipe.fit(X)
    ours = save(pipe, root / "model")
    numeric = [f"x{j}" for j in range(n_features)]
    categorical = [f"c{j}" for j in range(n_categorical)]
    pre = ColumnTransformer([("numeric", StandardScaler(), numeric),
                             ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)])
    base = Pipeline([("preprocess", pre), ("detector", IsolationForest(random_state=random_state))])
    base.fit(train.drop(columns=["row_id"]))
    base_path = root / "baseline.pkl"
    with open(base_path, "wb") as fh:
        pickle.dump(base, fh)
    return Path(ours), base_path


# ---------------------------------------------------------------------------------- children
def _peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` (Linux; ``ru_maxrss`` survives an
    ``exec`` and would report the parent's peak), else ``ru_maxrss``."""
    import resource

    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _child_ours(model: str, inp: str, out: str, chunk_rows: int, explain: int, profile: bool) -> dict[str, Any]:
    import time

    from gananomaly.pipelines.batch_score import load_model, score_file

    loaded, _ = load_model(model)
    base = _current_rss_mb()
    kwargs = {"chunk_rows": chunk_rows, "id_column": "row_id", "progress": False}
    if explain:
        kwargs["explain"] = explain
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    stats = score_file(loaded, inp, out, **kwargs)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "rows": stats["rows_scored"], "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base}
    if profiler is not None:
        profiler.disable()
        result["parts"] = _profile_parts(profiler, seconds)
    return result


def _profile_parts(profiler, seconds: float) -> dict[str, float]:
    """Seconds per part of :data:`PROFILE_PARTS` (cumulative times of its functions)."""
    import pstats

    stats = pstats.Stats(profiler).stats
    parts = {}
    for part, names in PROFILE_PARTS.items():
        parts[part] = sum(ct for (_file, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.items() if fn in names)
    parts["other"] = max(0.0, seconds - sum(parts.values()))
    return parts


def _child_baseline(model: str, inp: str, out: str) -> dict[str, Any]:
    import pickle
    import time

    with open(model, "rb") as fh:
        pipe = pickle.load(fh)
    base = _current_rss_mb()
    start = time.perf_counter()
    df = pd.read_parquet(inp)
    scores = pipe.score_samples(df.drop(columns=["row_id"]))
    offset = pipe[-1].offset_
    pd.DataFrame({"row_id": df["row_id"].to_numpy(), "score": scores,
                  "label": np.where(scores - offset < 0, -1, 1)}).to_parquet(out, index=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(df), "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base}


def _child(argv: list[str]) -> None:
    kind, model, inp, out = argv[:4]
    if kind == "baseline":
        result = _child_baseline(model, inp, out)
    else:
        result = _child_ours(model, inp, out, int(argv[4]), int(argv[5]), kind == "profile")
    print(json.dumps(result))


def _run_child(*args: Any) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("GANANOMALY_BATCH_THROTTLE_S", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.batch", "--child", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=str(REPO), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process {args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- runs
def benchmark_batch_score(n_rows: int, *, chunk_rows: int = 50_000, detector: dict[str, Any] | None = None,
                          explain: int = 0,
                          profile: bool = False, baseline: bool = True, workdir: str | os.PathLike | None = None,
                          random_state: int = 0) -> dict[str, Any]:
    """One size: ours and the baseline on the same generated Parquet file, each in a fresh process.

    ``detector``: parameters of our detector (default: 3 epochs; scoring cost does not
    depend on training length).

    Returns
    -------
    dict
        ``n_rows``, ``chunk_rows``, ``input_mb``, and per contestant (``ours``, ``baseline``)
        ``rows_per_s``, ``seconds``, ``peak_rss_mb``, ``base_rss_mb`` (after loading the model);
        ``ratio`` (ours / baseline rows/s); with ``profile`` the seconds of each part of ours.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    ctx = tempfile.TemporaryDirectory(prefix="gananomaly-batch-") if workdir is None else \
        contextlib.nullcontext(str(workdir))
    with ctx as root:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        model, base_model = fit_models(root, detector=detector, random_state=random_state)
        rng = np.random.RandomState(random_state + 1)
        inp = root / "input.parquet"
        write_generated(inp, "parquet", n_rows, lambda n, off: generate_block(n, off, rng))
        result: dict[str, Any] = {"n_rows": n_rows, "chunk_rows": chunk_rows, "explain": explain,
                                  "input_mb": inp.stat().st_size / 2**20}
        try:
            result["ours"] = _run_child("ours", model, inp, root / "ours.parquet", chunk_rows, explain)
            if baseline:
                result["baseline"] = _run_child("baseline", base_model, inp, root / "baseline.parquet")
            if profile and n_rows <= PROFILE_MAX_ROWS:
                result["profile"] = _run_child("profile", model, inp, root / "profile.parquet", chunk_rows,
                                               explain)["parts"]
        finally:
            for name in ("input.parquet", "ours.parquet", "baseline.parquet", "profile.parquet"):
                (root / name).unlink(missing_ok=True)
    for who in ("ours", "baseline"):
        if who in result:
            result[who]["rows_per_s"] = result[who]["rows"] / result[who]["seconds"]
    if "baseline" in result:
        result["ratio"] = result["ours"]["rows_per_s"] / result["baseline"]["rows_per_s"]
    return result


def run_batch(sizes: Sequence[int], *, chunk_rows: int = 50_000, explain: int = 0, profile: bool = False,
              detector: dict[str, Any] | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every size in turn; the dict written to ``batch.json``."""
    runs = []
    for n in sizes:
        say(f"batch: {n} rows ...")
        runs.append(benchmark_batch_score(int(n), chunk_rows=chunk_rows, explain=explain, profile=profile,
                                          detector=detector))
        r = runs[-1]
        say(f"  ours {r['ours']['rows_per_s']:.0f} rows/s, baseline {r['baseline']['rows_per_s']:.0f} rows/s, "
            f"ratio {r['ratio']:.2f}")
    return {"benchmark": "batch", "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "columns": {"numeric": N_FEATURES, "categorical": N_CATEGORICAL}, "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    """The Markdown table of a :func:`run_batch` result."""
    lines = ["| rows | ours rows/s | baseline rows/s | ratio | peak RSS MB ours | peak RSS MB baseline |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        o, b = r["ours"], r["baseline"]
        lines.append(f"| {r['n_rows']:,} | {o['rows_per_s']:,.0f} | {b['rows_per_s']:,.0f} | {r['ratio']:.2f} | "
                     f"{o['peak_rss_mb']:,.0f} | {b['peak_rss_mb']:,.0f} |")
    parts = [r for r in result["runs"] if "profile" in r]
    if parts:
        names = list(parts[0]["profile"])
        lines += ["", "Our job's time by part (seconds, cProfile):", "",
                  "| rows | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
        for r in parts:
            lines.append(f"| {r['n_rows']:,} | " + " | ".join(f"{r['profile'][k]:.2f}" for k in names) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated row counts")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--explain", type=int, default=0, help="score with --explain K (0: off)")
    parser.add_argument("--profile", action="store_true", help="also split our time over its parts (cProfile)")
    parser.add_argument("--out", default=str(HERE / "out"), help="directory for batch.json")
    parser.add_argument("--md", default=str(HERE / "BATCH.md"), help="where to write the Markdown table")


def run_args(args: argparse.Namespace, *, detector: dict[str, Any] | None = None) -> int:
    from gananomaly._atomic import atomic_open

    sizes = [int(float(s)) for s in str(args.sizes).split(",") if s.strip()]
    result = run_batch(sizes, chunk_rows=args.chunk_rows, explain=args.explain, profile=args.profile,
                       detector=detector)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "batch.json") as fh:
        json.dump(result, fh, indent=1)
    table = markdown(result)
    with atomic_open(Path(args.md)) as fh:
        fh.write("# Batch scoring: `gananomaly score` vs pandas + IsolationForest\n\n"
                 "Written by `python -m benchmarks batch`; see benchmarks/batch.py.\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
    else:
        p = argparse.ArgumentParser(prog="python -m benchmarks.batch")
        add_arguments(p)
        sys.exit(run_args(p.parse_args()))
