"""The built-in demo: breast-cancer data, benign as normal, malignant as anomalies."""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split

from gananomaly.estimator import GANAnomalyDetector
from gananomaly.metrics import evaluate_detector, evaluate_scores

__all__ = ["breast_cancer_split", "run_demo"]


def breast_cancer_split(seed: int = 0):
    """Train on 70% of the benign rows; test on the other benign rows plus every malignant row.

    Returns ``X_train, X_test, y_test`` (``y_test`` 1 = malignant = anomaly) as DataFrames/arrays.
    """
    data = load_breast_cancer(as_frame=True)
    X, y = data.data, data.target.to_numpy()
    normal, anomalous = X[y == 1], X[y == 0]
    X_train, X_test_normal = train_test_split(normal, test_size=0.3, random_state=seed)
    import pandas as pd

    X_test = pd.concat([X_test_normal, anomalous])
    y_test = np.r_[np.zeros(len(X_test_normal), dtype=int), np.ones(len(anomalous), dtype=int)]
    return X_train, X_test, y_test


def run_demo(epochs="auto", seed: int = 0, tracking: bool = True, experiment: str = "gananomaly-demo",
             tracking_uri: str | None = None) -> dict:
    epochs = epochs if epochs == "auto" else int(epochs)
    X_train, X_test, y_test = breast_cancer_split(seed)
    print(f"breast cancer: train {X_train.shape[0]} benign rows x {X_train.shape[1]} features; "
          f"test {int((y_test == 0).sum())} benign + {int(y_test.sum())} malignant")
    detector = GANAnomalyDetector(epochs=epochs, random_state=seed)
    callbacks, run_info = (), None
    if tracking:
        try:
            from gananomaly.tracking import demo_tracking
        except ImportError:
            demo_tracking = None
        if demo_tracking is not None:
            return demo_tracking(detector, X_train, X_test, y_test, experiment=experiment,
                                 tracking_uri=tracking_uri)
    start = time.perf_counter()
    detector.set_params(callbacks=callbacks).fit(X_train)
    fit_s = time.perf_counter() - start
    table = evaluate_detector(detector, X_test, y_test)
    iforest = IsolationForest(random_state=seed).fit(X_train)
    table.loc["IsolationForest (reference)"] = evaluate_scores(y_test, -iforest.score_samples(X_test))
    print(f"fit: {fit_s:.1f} s on {detector.device_}")
    print(table.round(4).to_string())
    return {"table": table, "detector": detector, "run": run_info}
