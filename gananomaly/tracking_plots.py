"""The figures of a tracked run: loss curves, score histogram, ROC curves, image grids.

Each function returns a bare matplotlib ``Figure`` (rendered with the Agg canvas; pyplot's global
state is never touched) for ``mlflow.log_figure``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["as_images", "figure", "plot_grid", "plot_histogram", "plot_losses", "plot_roc"]


def figure(width: float = 6.0, height: float = 4.0):
    # A bare Figure renders with the Agg canvas and never touches pyplot's global state.
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine would cost a second full draw per figure.
    fig = Figure(figsize=(width, height), dpi=90)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9, wspace=0.3, hspace=0.3)
    return fig


def plot_losses(history: dict[str, list[float]]):
    fig = figure(8, 4)
    ax_gan, ax_enc = fig.subplots(1, 2)
    for key in ("d_loss", "g_loss"):
        values = history.get(key) or []
        if values:
            ax_gan.plot(np.arange(len(values)), values, label=key)
    ratio = history.get("g_std_ratio") or []
    if ratio:
        ax_gan.plot(np.arange(len(ratio)), ratio, label="g_std_ratio", linestyle="--")
    fid = history.get("fidelity") or []
    if fid:
        ax_gan.plot(history.get("fidelity_epoch") or np.arange(len(fid)), fid, label="held-out fidelity",
                    linestyle=":", marker=".")
    ax_gan.set(title="GAN", xlabel="epoch", ylabel="loss")
    ax_gan.legend()
    e_loss = history.get("e_loss") or []
    if e_loss:
        ax_enc.plot(np.arange(len(e_loss)), e_loss, label="e_loss", color="tab:green")
        ax_enc.legend()
    ax_enc.set(title="encoder", xlabel="epoch", ylabel="loss")
    return fig


def plot_histogram(scores: pd.DataFrame, y: np.ndarray, component: str, threshold: float | None = None):
    fig = figure()
    ax = fig.subplots()
    values = scores[component].to_numpy()
    bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=40)
    ax.hist(values[y == 0], bins=bins, alpha=0.6, label=f"normal (n={int((y == 0).sum())})", density=True)
    ax.hist(values[y == 1], bins=bins, alpha=0.6, label=f"anomalous (n={int((y == 1).sum())})", density=True)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g} (outlier to the right)")
    ax.set(title=f"{component} anomaly score", xlabel="score (higher = more anomalous)", ylabel="density")
    ax.legend()
    return fig


def plot_roc(scores: pd.DataFrame, y: np.ndarray, metrics: pd.DataFrame):
    from sklearn.metrics import roc_curve

    fig = figure(5, 5)
    ax = fig.subplots()
    for name in scores.columns:
        fpr, tpr, _ = roc_curve(y, scores[name].to_numpy())
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics.loc[name, 'auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    return fig


def plot_grid(images: np.ndarray, title: str, ncols: int = 8):
    """A grid of (n, C, H, W) images, each scaled to [0, 1] for display."""
    n = images.shape[0]
    nrows = int(math.ceil(n / ncols))
    fig = figure(ncols * 1.2, nrows * 1.2 + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        img = np.moveaxis(img, 0, -1) if img.shape[0] in (1, 3, 4) else img
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    fig.suptitle(title)
    return fig


def as_images(arr: np.ndarray, image_shape) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if image_shape is not None:
        return arr.reshape((arr.shape[0],) + tuple(int(s) for s in image_shape))
    return arr
