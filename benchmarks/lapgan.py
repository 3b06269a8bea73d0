"""LAPGAN multi-scale scoring vs the single-scale convolutional detector.

``python -m benchmarks.lapgan [--seeds N] [--out DIR]`` prints a table of AUROC (mean, std
over seeds) on digits one-class (8x8) and the texture-defect task (32x32, per defect kind)
and writes ``lapgan.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from gananomaly import GANAnomalyDetector
from gananomaly.lapgan import LaplacianPyramidDetector
from pipelines.image_data import digits_one_class, texture_defects


def _tasks():
    for digit in (0, 3, 7):
        X_train, X_test, y = digits_one_class(digit)
        yield f"digits:{digit}", X_train / 16.0, X_test / 16.0, {"other digits": y}
    X_train, X_test, kinds = texture_defects(n_train=400, n_test_normal=100, n_per_defect=30)
    groups = {}
    for kind in sorted(set(kinds) - {"normal"}):
        keep = (kinds == "normal") | (kinds == kind)
        groups[kind] = (keep, (kinds[keep] == kind).astype(int))
    yield "texture", X_train, X_test, groups


def run(seeds: int = 3) -> list[dict]:
    rows = []
    for name, X_train, X_test, groups in _tasks():
        for model_name in ("conv (single scale)", "LAPGAN (3 levels)"):
            aucs: dict[str, list[float]] = {}
            start = time.perf_counter()
            for seed in range(seeds):
                if model_name.startswith("conv"):
                    det = GANAnomalyDetector(random_state=seed).fit(X_train)
                    score = -det.score_samples(X_test)
                else:
                    det = LaplacianPyramidDetector(levels=3, epochs=30, random_state=seed).fit(X_train)
                    score = -det.score_samples(X_test)
                for group, spec in groups.items():
                    if isinstance(spec, tuple):
                        keep, y = spec
                        aucs.setdefault(group, []).append(roc_auc_score(y, score[keep]))
                    else:
                        aucs.setdefault(group, []).append(roc_auc_score(spec, score))
            for group, values in aucs.items():
                rows.append({"task": name, "anomaly": group, "model": model_name,
                             "auroc_mean": float(np.mean(values)), "auroc_std": float(np.std(values)),
                             "seconds_per_fit": (time.perf_counter() - start) / seeds})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lapgan")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    rows = run(args.seeds)
    print(f"{'task':12} {'anomaly':14} {'model':22} {'AUROC':>14} {'s/fit':>7}")
    for r in rows:
        print(f"{r['task']:12} {r['anomaly']:14} {r['model']:22} "
              f"{r['auroc_mean']:.3f} ± {r['auroc_std']:.3f} {r['seconds_per_fit']:7.1f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lapgan.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
