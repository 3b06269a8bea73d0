"""Scoring throughput of a table model against IsolationForest, by thread count, with the
time of ``score_samples`` split over its parts (networks, latent term, k-NN term).

``python -m benchmarks scoring [--rows N] [--fit-rows N] [--threads 1,2] [--repeats R]
[--out DIR] [--md PATH]``: a default table model (one epoch: scoring cost does not depend
on training length) and ``IsolationForest()`` are fitted on the same ``--fit-rows`` x 30
rows; both score the same ``--rows`` rows, alternately, ``--repeats`` times per thread count
(torch threads for ours; for IsolationForest ``n_jobs`` and a joblib configuration of as many
threads for its scoring, which ``n_jobs`` alone leaves sequential); medians and their ratio are
reported. Writes ``speed_scoring.json`` under ``--out`` and a Markdown table to ``--md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.report import write_atomic
from benchmarks.speed import iforest_scores, make_data, threads

__all__ = ["run_scoring", "markdown", "add_arguments", "run_args", "PARTS"]

HERE = Path(__file__).resolve().parent
PARTS = ("networks", "latent", "knn")


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _parts(det, X: np.ndarray) -> dict[str, float]:
    """Seconds of each part of the score on ``X``: the three networks (with the residuals),
    the latent Mahalanobis term and the k-NN term, each through the scoring module's own
    functions. Features are standardised here as the estimator does (the values do not
    change the cost)."""
    import torch

    from gananomaly import scoring

    Xt = torch.from_numpy(((X - X.mean(0)) / X.std(0)).astype(np.float32))
    cfg = det.score_config_
    bare = dataclasses.replace(cfg, latent_factor=None, knn_bank=None)
    out: dict = {}
    start = time.perf_counter()
    raw = scoring.raw_scores(det.generator_, det.discriminator_, det.encoder_, Xt, det.device_, bare)
    out["networks"] = time.perf_counter() - start
    codes = torch.from_numpy(raw["codes"])
    out["latent"] = _seconds(lambda: scoring.latent_distance(codes, cfg))
    out["knn"] = _seconds(lambda: scoring.knn_distance(raw["features"], cfg))
    return out


def _one_thread_count(det, X_fit: np.ndarray, X: np.ndarray, n_threads: int, repeats: int) -> dict:
    from sklearn.ensemble import IsolationForest

    iforest = IsolationForest(random_state=0, n_jobs=None if n_threads == 1 else n_threads).fit(X_fit)
    with threads(n_threads):
        det.score_samples(X[:2000])  # first-call allocations
        ours, peer, parts = [], [], []
        for _ in range(repeats):  # alternate, so a busy moment hits both sides
            ours.append(_seconds(lambda: det.score_samples(X)))
            peer.append(_seconds(lambda: iforest_scores(iforest, X, n_threads)))
            parts.append(_parts(det, X))
    ours_s, peer_s = float(np.median(ours)), float(np.median(peer))
    split = {name: float(np.median([p[name] for p in parts])) for name in PARTS}
    split["other"] = max(0.0, ours_s - sum(split.values()))
    return {"threads": n_threads, "ours_s": ours_s, "iforest_s": peer_s,
            "ours_rows_per_s": len(X) / ours_s, "iforest_rows_per_s": len(X) / peer_s,
            "ratio_ours_over_iforest": peer_s / ours_s, "parts_s": split,
            "parts_share": {name: value / ours_s for name, value in split.items()}}


def run_scoring(n_rows: int = 200_000, fit_rows: int = 10_000, thread_counts: Sequence[int] = (1, 2),
                repeats: int = 3, *, progress: Callable[[str], None] | None = None) -> dict:
    """Ours against IsolationForest at each of ``thread_counts``; see the module docstring."""
    import torch

    from gananomaly import GANAnomalyDetector

    X_fit, X = make_data(fit_rows, seed=1), make_data(n_rows, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = GANAnomalyDetector(random_state=0, device="cpu", epochs=1).fit(X_fit)
    rows = []
    for n in thread_counts:
        row = _one_thread_count(det, X_fit, X, int(n), int(repeats))
        rows.append(row)
        if progress is not None:
            progress(f"{n} thread(s): ours {row['ours_rows_per_s']:,.0f} rows/s, IsolationForest "
                     f"{row['iforest_rows_per_s']:,.0f} rows/s, ratio {row['ratio_ours_over_iforest']:.2f}")
    return {"date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "torch": torch.__version__,
            "load_average_at_start": list(os.getloadavg()), "n_rows": int(n_rows), "fit_rows": int(fit_rows),
            "n_features": int(X.shape[1]), "repeats": int(repeats),
            "knn_bank_rows": int(det.score_config_.knn_bank.shape[0]), "hidden_dims": list(det.arch_["hidden_dims"]),
            "rows": rows}


def markdown(result: dict) -> str:
    """The table of :func:`run_scoring`'s result."""
    lines = [f"Scoring {result['n_rows']:,} rows x {result['n_features']} features; model fitted on "
             f"{result['fit_rows']:,} rows (k-NN bank {result['knn_bank_rows']:,} rows, hidden "
             f"{result['hidden_dims']}); median of {result['repeats']}; {result['machine']}, "
             f"load average at start {', '.join(f'{v:.1f}' for v in result['load_average_at_start'])}; "
             f"{result['date_utc']}.", "",
             "| threads | ours rows/s | IsolationForest rows/s | ratio | networks | latent | knn | other |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        parts = " | ".join(f"{r['parts_s'][k]:.3f}s ({100 * r['parts_share'][k]:.0f}%)" for k in (*PARTS, "other"))
        lines.append(f"| {r['threads']} | {r['ours_rows_per_s']:,.0f} | {r['iforest_rows_per_s']:,.0f} | "
                     f"{r['ratio_ours_over_iforest']:.2f} | {parts} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=200_000, help="rows scored (default 200,000)")
    parser.add_argument("--fit-rows", type=int, default=10_000, help="training rows (default 10,000)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per thread count (default 3)")
    parser.add_argument("--out", default=str(HERE / "out"), help="directory for speed_scoring.json")
    parser.add_argument("--md", default=None, help="Markdown table (default: OUT/speed_scoring.md)")


def run_args(args: argparse.Namespace) -> int:
    try:
        counts = [int(v) for v in args.threads.split(",")]
    except ValueError:
        raise SystemExit(f"--threads must be comma-separated integers, got {args.threads!r}") from None
    for name, value in (("--rows", args.rows), ("--fit-rows", args.fit_rows), ("--repeats", args.repeats),
                        *(("--threads", c) for c in counts)):
        if value < 1:
            raise SystemExit(f"{name} must be >= 1, got {value}")
    result = run_scoring(args.rows, args.fit_rows, counts, args.repeats, progress=lambda m: print(m, flush=True))
    out = Path(args.out)
    write_atomic(out / "speed_scoring.json", json.dumps(result, indent=1))
    md_path = Path(args.md) if args.md else out / "speed_scoring.md"
    write_atomic(md_path, markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'speed_scoring.json'} and {md_path}")
    return 0
