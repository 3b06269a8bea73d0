"""Evaluation metrics for anomaly scores (higher score = more anomalous, label 1 = anomaly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

__all__ = ["evaluate_scores", "evaluate_detector"]


def _check_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0 (normal) / 1 (anomaly), got values {sorted(values)[:10]}")
    if len(values) < 2:
        raise ValueError("labels must contain both normal (0) and anomalous (1) samples to evaluate")
    return y.astype(int)


def evaluate_scores(y_true, anomaly_score, predicted_anomaly=None) -> dict[str, float]:
    """AUROC, AUPRC and (when ``predicted_anomaly`` is given) F1 of the anomaly class."""
    y = _check_labels(y_true)
    s = np.asarray(anomaly_score, dtype=np.float64)
    out = {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}
    if predicted_anomaly is not None:
        out["f1"] = float(f1_score(y, np.asarray(predicted_anomaly).astype(int), zero_division=0))
    return out


def evaluate_detector(detector, X, y_true) -> pd.DataFrame:
    """Metrics of every score component of a fitted detector on labelled data.

    Returns a DataFrame indexed by component (``discriminator``, ``reconstruction``,
    ``combined``) with columns ``auroc``, ``auprc`` and ``f1`` (F1 of the anomaly class at
    the detector's threshold, for the component that drives ``predict``).
    """
    comps = detector.score_components(X)
    y = _check_labels(y_true)
    rows = {}
    threshold_component = getattr(detector, "component", "combined")
    predicted = detector.predict(X) == -1
    for name in comps.columns:
        rows[name] = evaluate_scores(y, comps[name].to_numpy(),
                                     predicted if name == threshold_component else None)
    return pd.DataFrame(rows).T
