"""Contextual anomalies: a reading that is normal for *some* context, but not for its own.

``python -m benchmarks.context [--seeds N] [--jobs J] [--out DIR]`` generates three tables
whose rows carry a categorical context (a machine) and whose anomalies are ordinary readings
of another context, and compares, on the same split:

* ours with the context (``fit(X, context=machine)``: a conditional GAN),
* ours with the context one-hot encoded as ordinary features,
* IsolationForest, KNN (k=5) and LOF on the standardised readings plus the one-hot context,
* KNN fitted per context (a classical detector told the context: one model per machine).

Data sets: ``flip`` (x1 follows +x0 on machine A and -x0 on B: the relation flips, the marginals
do not), ``hotcold`` (machine A runs around +2, B around -2 in 4 columns) and ``machines5`` (five
machines of 40/25/15/12/8 % of the rows, each reading a 2-D plane of its own orientation in 5
columns, all centred alike). Besides AUROC on all test rows, the table gives AUROC on the rows of
the smallest context (its normal test rows against the anomalies of that context). Writes
``context.json`` and ``CONTEXT.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.report import write_atomic

HERE = Path(__file__).resolve().parent
DATASETS = ("flip", "hotcold", "machines5")
DETECTORS = ("ours, context", "ours, one-hot feature", "IsolationForest, one-hot", "KNN, one-hot", "LOF, one-hot",
             "KNN per context")


@dataclass
class ContextSplit:
    X_train: np.ndarray
    c_train: np.ndarray
    X_test: np.ndarray
    c_test: np.ndarray
    y_test: np.ndarray  # 1 = anomaly


def _flip(seed: int) -> ContextSplit:
    rng = np.random.RandomState(seed)

    def draw(k, ctx, flipped):
        x0 = rng.randn(k)
        sign = np.where(ctx == "A", 1.0, -1.0) * np.where(flipped, -1.0, 1.0)
        return np.c_[x0, sign * x0 + 0.15 * rng.randn(k), 0.5 * rng.randn(k)]

    c_train, c_test = rng.choice(["A", "B"], 2000), rng.choice(["A", "B"], 400)
    y = (np.arange(400) >= 320).astype(int)
    return ContextSplit(draw(2000, c_train, np.zeros(2000, bool)), c_train, draw(400, c_test, y == 1), c_test, y)


def _hotcold(seed: int) -> ContextSplit:
    rng = np.random.RandomState(seed)

    def draw(k, ctx, flipped):
        centre = np.where(ctx == "A", 2.0, -2.0) * np.where(flipped, -1.0, 1.0)
        return centre[:, None] + 0.4 * rng.randn(k, 4)

    c_train, c_test = rng.choice(["A", "B"], 1500), rng.choice(["A", "B"], 300)
    y = (np.arange(300) >= 240).astype(int)
    return ContextSplit(draw(1500, c_train, np.zeros(1500, bool)), c_train, draw(300, c_test, y == 1), c_test, y)


def _machines5(seed: int) -> ContextSplit:
    rng = np.random.RandomState(seed)
    names = np.array(["m1", "m2", "m3", "m4", "m5"])
    weights = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
    # each machine's readings span a 2-D plane of its own orientation (orthonormal basis), same centre
    bases = [np.linalg.qr(np.random.RandomState(100 + j).randn(5, 2))[0] for j in range(5)]

    def draw(k, machine_idx):
        z = rng.randn(k, 2) * np.array([1.5, 0.8])
        out = np.stack([bases[j] @ z[i] for i, j in enumerate(machine_idx)])
        return out + 0.05 * rng.randn(k, 5)

    m_train = rng.choice(5, 2500, p=weights)
    n_test, n_anom = 500, 125
    m_test = np.r_[rng.choice(5, n_test, p=weights), rng.choice(5, n_anom, p=weights)]
    source = m_test.copy()  # an anomaly reads the plane of another machine
    source[n_test:] = (m_test[n_test:] + rng.randint(1, 5, n_anom)) % 5
    y = np.r_[np.zeros(n_test, int), np.ones(n_anom, int)]
    return ContextSplit(draw(2500, m_train), names[m_train], draw(len(m_test), source), names[m_test], y)


GENERATORS = {"flip": _flip, "hotcold": _hotcold, "machines5": _machines5}


def _onehot(c: np.ndarray, categories: list[str]) -> np.ndarray:
    return (c[:, None] == np.asarray(categories)[None, :]).astype(float)


def _anomaly_scores(name: str, split: ContextSplit, seed: int) -> np.ndarray:
    """Higher = more anomalous, on the test rows."""
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import StandardScaler

    from benchmarks.contestants import KNNDetector
    from gananomaly import GANAnomalyDetector

    cats = sorted(set(split.c_train))
    scaler = StandardScaler().fit(split.X_train)
    Z_train, Z_test = scaler.transform(split.X_train), scaler.transform(split.X_test)
    F_train = np.c_[Z_train, _onehot(split.c_train, cats)]
    F_test = np.c_[Z_test, _onehot(split.c_test, cats)]
    if name == "ours, context":
        det = GANAnomalyDetector(random_state=seed).fit(split.X_train, context=split.c_train)
        return -det.score_samples(split.X_test, context=split.c_test)
    if name == "ours, one-hot feature":
        det = GANAnomalyDetector(random_state=seed).fit(np.c_[split.X_train, _onehot(split.c_train, cats)])
        return -det.score_samples(np.c_[split.X_test, _onehot(split.c_test, cats)])
    if name == "IsolationForest, one-hot":
        return -IsolationForest(random_state=seed).fit(F_train).score_samples(F_test)
    if name == "KNN, one-hot":
        return -KNNDetector().fit(F_train).score_samples(F_test)
    if name == "LOF, one-hot":
        return -LocalOutlierFactor(novelty=True).fit(F_train).score_samples(F_test)
    if name == "KNN per context":
        out = np.empty(len(Z_test))
        for c in cats:
            rows = split.c_test == c
            if rows.any():
                out[rows] = -KNNDetector().fit(Z_train[split.c_train == c]).score_samples(Z_test[rows])
        return out
    raise ValueError(f"unknown detector {name!r}")


def measure(dataset: str, seed: int) -> list[dict]:
    """One row per detector: AUROC on every test row and on the smallest context's rows."""
    import torch
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(1)
    split = GENERATORS[dataset](seed)
    counts = {c: int((split.c_train == c).sum()) for c in set(split.c_train)}
    small = min(counts, key=counts.get)
    in_small = split.c_test == small
    rows = []
    for name in DETECTORS:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = _anomaly_scores(name, split, seed)
        rows.append({"dataset": dataset, "seed": seed, "detector": name,
                     "auroc": float(roc_auc_score(split.y_test, scores)),
                     "auroc_smallest_context": float(roc_auc_score(split.y_test[in_small], scores[in_small])),
                     "smallest_context": small, "smallest_share": counts[small] / len(split.c_train),
                     "fit_score_s": time.perf_counter() - start})
    return rows


def markdown(result: dict) -> str:
    lines = [f"Contextual anomalies (`python -m benchmarks.context`): AUROC mean ± std over seeds "
             f"{result['seeds']}; in brackets AUROC on the smallest context's test rows. {result['machine']}, "
             f"{result['date_utc']}.", "",
             "| detector | " + " | ".join(DATASETS) + " |", "|---|" + "---|" * len(DATASETS)]
    for det in DETECTORS:
        cells = []
        for ds in DATASETS:
            rs = [r for r in result["rows"] if r["detector"] == det and r["dataset"] == ds]
            a = np.array([r["auroc"] for r in rs])
            s = np.array([r["auroc_smallest_context"] for r in rs])
            cells.append(f"{a.mean():.3f} ± {a.std():.3f} ({s.mean():.3f})" if len(rs) else "-")
        lines.append(f"| {det} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.context", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown or args.seeds < 1 or args.jobs < 1:
        raise SystemExit(f"unknown data sets {unknown} (choose from {list(DATASETS)})" if unknown
                         else "--seeds and --jobs must be >= 1")
    tasks = [(d, s) for d in datasets for s in range(args.seeds)]
    start = time.time()
    if args.jobs == 1:
        parts = [measure(d, s) for d, s in tasks]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(measure, *zip(*tasks)))
    result = {"date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "seeds": list(range(args.seeds)),
              "elapsed_s": time.time() - start, "rows": [r for p in parts for r in p]}
    out = Path(args.out)
    write_atomic(out / "context.json", json.dumps(result, indent=1))
    write_atomic(out / "CONTEXT.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
