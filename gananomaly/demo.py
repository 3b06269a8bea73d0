"""The built-in demo: breast-cancer data, benign as normal, malignant as anomalies."""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import train_test_split
from sklearn.utils import _safe_indexing

from gananomaly.estimator import GANAnomalyDetector
from gananomaly.metrics import evaluate_detector, evaluate_scores
from gananomaly.tracking_store import sqlite_path

__all__ = ["breast_cancer_split", "run_demo", "demo_tracking"]


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
    """Fit on the breast-cancer split and print AUROC/AUPRC/F1 per score component next to IsolationForest.

    With ``tracking=True`` the fit is an MLflow run (see :func:`demo_tracking`).

    Returns
    -------
    dict
        ``table``, ``detector`` and ``run`` (None without tracking).
    """
    epochs = epochs if epochs == "auto" else int(epochs)
    X_train, X_test, y_test = breast_cancer_split(seed)
    print(f"breast cancer: train {X_train.shape[0]} benign rows x {X_train.shape[1]} features; "
          f"test {int((y_test == 0).sum())} benign + {int(y_test.sum())} malignant")
    detector = GANAnomalyDetector(epochs=epochs, random_state=seed)
    callbacks, run_info = (), None
    if tracking:
        return demo_tracking(detector, X_train, X_test, y_test, experiment=experiment,
                             tracking_uri=tracking_uri, seed=seed)
    start = time.perf_counter()
    detector.set_params(callbacks=callbacks).fit(X_train)
    fit_s = time.perf_counter() - start
    table = evaluate_detector(detector, X_test, y_test)
    iforest = IsolationForest(random_state=seed).fit(X_train)
    table.loc["IsolationForest (reference)"] = evaluate_scores(y_test, -iforest.score_samples(X_test))
    print(f"fit: {fit_s:.1f} s on {detector.device_}")
    _print_fidelity(detector, X_test, y_test)
    print(table.round(4).to_string())
    return {"table": table, "detector": detector, "run": run_info}


def demo_tracking(detector: GANAnomalyDetector, X_train, X_test, y_test, *, experiment: str = "gananomaly-demo",
                  tracking_uri: str | None = None, seed: int = 0) -> dict:
    """Fit ``detector`` through :func:`gananomaly.tracking.tracked_fit` and print the results.

    Prints the metrics table of :func:`run_demo` (every score component next to
    IsolationForest), the run id, the tracking URI and the command that opens the MLflow UI
    on the same store.

    Parameters
    ----------
    detector : GANAnomalyDetector
    X_train : array-like
        Normal training rows.
    X_test, y_test : array-like
        Labelled test rows (``y_test``: 1 = anomaly).
    experiment : str, default="gananomaly-demo"
    tracking_uri : str, optional
        Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory.
    seed : int, default=0
        Seed of the IsolationForest reference.

    Returns
    -------
    dict
        ``table`` (metrics DataFrame), ``detector``, ``run`` (dict with ``run_id``,
        ``tracking_uri``, ``experiment`` and ``model_uri``).
    """
    from gananomaly.tracking import TrackingUnavailableError, resolve_tracking_uri, tracked_fit

    uri = resolve_tracking_uri(tracking_uri)
    start = time.perf_counter()
    try:
        detector, run_id = tracked_fit(detector, X_train, X_eval=X_test, y_eval=y_test, experiment=experiment,
                                       tracking_uri=uri, run_name="demo-breast-cancer",
                                       extra_params={"dataset": "sklearn breast_cancer (benign = normal)"})
    except TrackingUnavailableError as err:
        # The demo still shows its results; the run is what is missing.
        print(f"warning: {err}")
        detector, run_id = err.model, None
    elapsed = time.perf_counter() - start
    table = evaluate_detector(detector, X_test, y_test)
    iforest = IsolationForest(random_state=seed).fit(X_train)
    table.loc["IsolationForest (reference)"] = evaluate_scores(y_test, -iforest.score_samples(X_test))
    if run_id is None:
        print(f"fit: {elapsed:.1f} s on {detector.device_} (not tracked)")
        _print_fidelity(detector, X_test, y_test)
        print(table.round(4).to_string())
        return {"table": table, "detector": detector, "run": None}
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    fit_s = run.data.metrics.get("fit_time_s", float("nan"))
    model_uri = run.data.tags.get("gananomaly.model_uri")
    print(f"fit: {fit_s:.1f} s on {detector.device_} (tracked fit with logging: {elapsed:.1f} s)")
    _print_fidelity(detector, X_test, y_test)
    print(table.round(4).to_string())
    print(f"MLflow run {run_id} in experiment {experiment!r} at {uri}")
    if model_uri:
        print(f"model: {model_uri}  (load: gananomaly.mlflow.load_model or mlflow.pyfunc.load_model)")
    if uri.startswith(("http://", "https://")):
        print(f"open the MLflow UI at {uri}")
    else:
        db = sqlite_path(uri)
        where = "   (run it in this directory)" if db is not None and not db.startswith("/") else ""
        print(f"open the MLflow UI: mlflow ui --backend-store-uri {uri}{where}, then browse http://127.0.0.1:5000")
    return {"table": table, "detector": detector,
            "run": {"run_id": run_id, "tracking_uri": uri, "experiment": experiment, "model_uri": model_uri}}


def _print_fidelity(detector, X_test=None, y_test=None) -> None:
    """What the generator learned, measured on the held-out normal rows and, given labelled
    test rows, on their normal rows (``y_test == 0``), which neither trained nor chose it."""
    f = getattr(detector, "fidelity_", None) or {}
    if f:
        where = "held-out" if f.get("held_out") else "training"
        print(f"generator fidelity on {int(f['n_rows'])} {where} rows after {detector.n_epochs_} epochs: "
              f"{f['fidelity']:.3f} (precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
              f"density {f['density']:.3f}, coverage {f['coverage']:.3f}, reverse density "
              f"{f.get('reverse_density', float('nan')):.3f}); real samples score about 1")
    normal = np.flatnonzero(np.asarray(y_test) == 0) if X_test is not None else np.empty(0)
    if normal.size >= 2:
        t = detector.generator_fidelity(_safe_indexing(X_test, normal), random_state=0)
        print(f"generator fidelity on the {normal.size} normal test rows: {t['fidelity']:.3f} (coverage "
              f"{t['coverage']:.3f}, density {t['density']:.3f}, reverse density {t['reverse_density']:.3f})")
