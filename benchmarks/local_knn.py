"""A study: the k-NN score component global, half local (the default) and local, on the same fits.

``python -m benchmarks.local_knn [--datasets A,B] [--seeds N] [--out FILE.json]`` fits the
default detector per data set and seed and scores the test rows with the combined score as
it is (its k-NN term averages, each standardised on the training rows, a row's mean distance
to its 5 nearest training rows in the discriminator's feature space and that distance divided
by the mean of the same distance of those 5 training rows, LOF's normalisation), and with the
k-NN term replaced by the distance alone (the default before the local term), by the ratio
alone, or dropped. Prints a table of AUROC per variant next to KNN (k=5, standardised input,
as the benchmark's), LOF and IsolationForest, with the fit's fidelity and Parzen gap (its
held-out rows) and its fidelity on the normal test rows, and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings

import numpy as np

from benchmarks import datasets as _datasets

K = 5
DEFAULT_DATASETS = ("dense_cluster", "reversed_cancer", "breast_cancer", "wine", "iris", "digits", "gen_local",
                    "gen_dependency")


def _features(det, X) -> np.ndarray:
    """The discriminator's inner features of ``X``, as the k-NN term reads them."""
    from gananomaly import scoring as _scoring

    Xt = det._prepare(X, None)[0]
    cfg = dataclasses.replace(det.score_config_, knn_bank=None)
    raw = _scoring._raw_scores(det.generator_, det.discriminator_, det.encoder_, Xt, det.device_, cfg)
    return raw["features"]


def measure(name: str, seed: int) -> dict:
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.preprocessing import StandardScaler

    from benchmarks.contestants import KNNDetector
    from gananomaly import GANAnomalyDetector
    from gananomaly import scoring as _scoring

    split = _datasets.load(name, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = GANAnomalyDetector(random_state=seed).fit(split.X_train)
        comp = det.score_components(split.X_test)
        cfg = det.score_config_
        dist, local = _scoring.knn_terms(_features(det, split.X_test), cfg)
    distance = (dist - cfg.loc["knn"]) / cfg.scale["knn"]
    ratio = (local - cfg.loc["knn_local"]) / cfg.scale["knn_local"]
    w = det._knn_weight()
    without = comp["combined"].to_numpy() - w * comp["knn"].to_numpy()
    variants = {"default": comp["combined"].to_numpy(), "global": without + w * distance,
                "half_local": without + w * ((1 - _scoring.KNN_LOCAL_SHARE) * distance
                                             + _scoring.KNN_LOCAL_SHARE * ratio),
                "local": without + w * ratio, "no_knn": without}
    y = split.y_test
    row = {"dataset": name, "seed": seed, **{k: float(roc_auc_score(y, v)) for k, v in variants.items()}}
    row["IsolationForest"] = float(roc_auc_score(
        y, -IsolationForest(random_state=seed).fit(split.X_train).score_samples(split.X_test)))
    scaler = StandardScaler().fit(split.X_train)
    train_s, test_s = scaler.transform(split.X_train), scaler.transform(split.X_test)
    row["KNN"] = float(roc_auc_score(y, -KNNDetector(K).fit(train_s).score_samples(test_s)))
    row["LOF"] = float(roc_auc_score(y, -LocalOutlierFactor(novelty=True).fit(train_s).score_samples(test_s)))
    # what the generator learned, beside the AUROC: the fit's own measure and on the normal test rows
    row["fidelity"] = float(det.fidelity_["fidelity"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test_fid = det.generator_fidelity(split.X_test[y == 0], random_state=seed)
    row["test_fidelity"] = float(test_fid["fidelity"])
    row["parzen_gap"] = float(det.fidelity_.get("parzen_gap", np.nan))  # held-out rows, nats per row
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local_knn")
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = []
    for seed in range(args.seeds):
        for name in args.datasets.split(","):
            rows.append(measure(name, seed))
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                  flush=True)
    cols = ["default", "global", "half_local", "local", "no_knn", "KNN", "LOF", "IsolationForest", "fidelity",
            "test_fidelity", "parzen_gap"]
    print("\n| data set | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        print(f"| {name} | " + " | ".join(f"{np.mean([r[c] for r in mine]):.3f}" for c in cols) + " |")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
