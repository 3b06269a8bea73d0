"""Evaluation metrics for anomaly scores (higher score = more anomalous, label 1 = anomaly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

__all__ = ["evaluate_scores", "evaluate_detector", "pixel_auroc", "pro_score", "threshold_from_labels",
           "anomaly_auroc", "anomaly_scorer"]


def check_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0 (normal) / 1 (anomaly), got values {sorted(values)[:10]}")
    if len(values) < 2:
        raise ValueError("labels must contain both normal (0) and anomalous (1) samples to evaluate")
    return y.astype(int)


def anomaly_auroc(y_true, normality) -> float:
    """AUROC with the library's label convention (1 = anomaly) for ``score_samples``-like
    scores (higher = more normal): scikit-learn's ``roc_auc_score`` on them would invert."""
    y = check_labels(y_true)
    return float(roc_auc_score(y, -np.asarray(normality, dtype=np.float64)))


def anomaly_scorer(estimator, X, y) -> float:
    """A scikit-learn scorer for model selection with y = 1 for anomalies, 0 for normal rows:
    ``GridSearchCV(GANAnomalyDetector(), grid, scoring=anomaly_scorer)``. It reads the
    detector's ``score_samples`` (``scoring="roc_auc"`` reads ``decision_function``, higher =
    more normal, against y = 1 for anomalies, and ranks the worst model first)."""
    return anomaly_auroc(y, estimator.score_samples(X))


def threshold_from_labels(y_true, scores, *, target_fpr: float | None = None) -> float:
    """A threshold on ``score_samples`` picked from labelled data, for
    ``detector.set_threshold(score=...)`` (a sample scoring below it is an outlier).

    Parameters
    ----------
    y_true : array-like of 0 (normal) / 1 (anomaly)
    scores : array-like
        ``score_samples`` of the same rows (higher = more normal).
    target_fpr : float in (0, 1), optional
        Flag as many anomalies as possible while flagging at most this share of the normal
        rows. Default: the threshold with the best F1 of the anomaly class.
    """
    y = check_labels(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape or not np.isfinite(s).all():
        raise ValueError(f"scores must be {y.shape[0]} finite numbers, one per label")
    # Candidate thresholds: midway between consecutive distinct scores, and beyond both ends;
    # "outlier" means score < threshold.
    cuts = np.unique(s)
    cand = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    normal, anomal = np.sort(s[y == 0]), np.sort(s[y == 1])
    flagged_normal = np.searchsorted(normal, cand, side="left")
    flagged_anomal = np.searchsorted(anomal, cand, side="left")
    if target_fpr is not None:
        if not 0 < target_fpr < 1:
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
        ok = flagged_normal <= target_fpr * len(normal)
        best = np.flatnonzero(ok)[np.argmax(flagged_anomal[ok])]  # ok[0] holds: nothing flagged
        return float(cand[best])
    precision = flagged_anomal / np.maximum(flagged_anomal + flagged_normal, 1)
    recall = flagged_anomal / len(anomal)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return float(cand[int(np.argmax(f1))])


def evaluate_scores(y_true, anomaly_score, predicted_anomaly=None) -> dict[str, float]:
    """AUROC, AUPRC and (when ``predicted_anomaly`` is given) F1 of the anomaly class."""
    y = check_labels(y_true)
    s = np.asarray(anomaly_score, dtype=np.float64)
    out = {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}
    if predicted_anomaly is not None:
        out["f1"] = float(f1_score(y, np.asarray(predicted_anomaly).astype(int), zero_division=0))
    return out


def evaluate_detector(detector, X, y_true, *, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Metrics of every score component of a fitted detector on labelled data.

    Returns a DataFrame indexed by component (``discriminator``, ``reconstruction``, ...,
    ``combined``) with columns ``auroc``, ``auprc`` and ``f1`` (F1 of the anomaly class at
    the detector's threshold, for the component that drives ``predict``). The scores come
    from one pass, the detector's ``score_table`` (or ``table``, that output computed
    already); a detector without ``score_table`` is scored with ``score_components`` and
    ``predict``.
    """
    y = check_labels(y_true)
    if table is None and hasattr(detector, "score_table"):
        table = detector.score_table(X)
    if table is not None:
        comps = table.drop(columns=["score", "label"])
        predicted = table["label"].to_numpy() == -1
    else:
        comps = detector.score_components(X)
        predicted = detector.predict(X) == -1
    rows = {}
    threshold_component = getattr(detector, "component", "combined")
    for name in comps.columns:
        rows[name] = evaluate_scores(y, comps[name].to_numpy(),
                                     predicted if name == threshold_component else None)
    return pd.DataFrame(rows).T


def _check_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    masks, maps = np.asarray(masks, dtype=bool), np.asarray(maps, dtype=np.float64)
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks and maps must both have shape (n_images, H, W), got {masks.shape} and {maps.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinity")
    if not masks.any() or masks.all():
        raise ValueError("masks must mark some anomalous and some normal pixels")
    return masks, maps


def pixel_auroc(masks, maps) -> float:
    """AUROC of every pixel's map value against its ground-truth mask (True = defect)."""
    masks, maps = _check_maps(masks, maps)
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def pro_score(masks, maps, *, max_fpr: float = 0.3, n_thresholds: int = 200) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr`` (the MVTec AD
    evaluation, Bergmann et al. 2021).

    Every connected defect region of every image counts once, whatever its size: at a
    threshold, its overlap is the share of its pixels above the threshold; PRO is the mean
    overlap over regions, plotted against the false-positive rate on defect-free pixels and
    integrated from 0 to ``max_fpr``, divided by ``max_fpr`` (1 = perfect, about
    ``max_fpr / 2`` for a random map)."""
    from scipy import ndimage

    masks, maps = _check_maps(masks, maps)
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    normal = np.sort(maps[~masks])
    # thresholds at the quantiles of the defect-free pixels that give FPRs from 0 to max_fpr
    fpr_grid = np.linspace(0.0, max_fpr, n_thresholds)
    thresholds = np.quantile(normal, 1.0 - fpr_grid)
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="right") / normal.size
    overlaps = []
    for mask, amap in zip(masks, maps):
        labels, n_regions = ndimage.label(mask)
        for region in range(1, n_regions + 1):
            values = np.sort(amap[labels == region])
            overlaps.append(1.0 - np.searchsorted(values, thresholds, side="right") / values.size)
    pro = np.mean(overlaps, axis=0)
    order = np.argsort(fpr, kind="stable")
    fpr, pro = np.clip(fpr[order], 0, max_fpr), pro[order]
    # Ties among the defect-free values can leave FPRs below max_fpr unreachable; a lower
    # threshold only adds positives, so the curve holds its last value up to max_fpr.
    fpr, pro = np.r_[0.0, fpr, max_fpr], np.r_[pro[0], pro, pro[-1]]
    area = np.sum((fpr[1:] - fpr[:-1]) * (pro[1:] + pro[:-1]) / 2)
    return float(area / max_fpr)
