"""Fitting on images and the built-in image demos (part of the image job,
:mod:`gananomaly.pipelines.image`): :func:`fit_images` fits, evaluates, logs and saves;
:func:`run_image_demo` measures AUROC next to IsolationForest; :func:`conv_throughput` the speed
of the convolutional detector."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines.image_files import ImageSet, load_image_source
from gananomaly.pipelines.image_scoring import (
    GRID_GAP,
    auroc_per_kind,
    grid_tile_shape,
    score_table,
    table_format,
    top_anomaly_grid,
    write_table_atomic,
)

__all__ = ["conv_throughput", "fit_images", "run_image_demo"]

log = logging.getLogger("gananomaly.pipelines.image")


def fit_images(
    source: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    channels: str = "auto",
    scores_csv: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    mlflow: bool = True,
    experiment: str = "gananomaly-images",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    log_model: bool = True,
) -> dict[str, Any]:
    """Fit a detector on the normal images of ``source``, evaluate, log, save.

    Parameters
    ----------
    source : path
        Folder (``train/``, optional ``test/``), ``.npy`` (training images) or ``.npz``.
    model_dir : path
        Where the model is saved (replaced atomically).
    mode, size, on_error : see :func:`load_image_files`
    channels : {"auto", "first", "last"}
        Layout of array sources (see :class:`gananomaly.GANAnomalyDetector`).
    scores_csv : path, optional
        Per-file scores of the test images, the table of :func:`score_table` (the schema of
        ``gananomaly score``), CSV or Parquet by the suffix (``.csv``, ``.parquet``/``.pq``),
        written atomically. Needs test images.
    params : dict, optional
        :class:`gananomaly.GANAnomalyDetector` parameters (default ``random_state=0``).
    mlflow : bool, default=True
        Log the run with :func:`gananomaly.tracking.tracked_fit`, plus ``auroc_kind_<kind>`` metrics and, when there
        are test images, the artifacts ``anomaly_maps/top_anomalies.png`` (see
        :func:`top_anomaly_grid`) and ``anomaly_maps/top_anomalies.json`` (its tiles' files and
        scores, most anomalous first).
    experiment, run_name, tracking_uri : MLflow settings.
    log_model : bool, default=True
        Also log the model as an MLflow artifact (it is saved to ``model_dir`` either way).

    Returns
    -------
    dict with ``model`` (the fitted detector), ``model_dir``, ``run_id`` (None without
    MLflow), ``auroc`` (per defect kind and ``all``; empty without labels),
    ``scores`` (DataFrame or None), ``skipped`` (unreadable files), ``fit_seconds``.
    """
    from gananomaly import GANAnomalyDetector
    from gananomaly.model_dir import check_target
    from gananomaly.persistence import save

    check_target(Path(model_dir))  # the outputs and the data are checked before the training, not after it
    train, test = _load_splits(source, mode=mode, size=size, on_error=on_error, channels=channels)
    if scores_csv is not None and test is None:
        raise ValueError(f"--scores / scores_csv={str(scores_csv)!r} needs test images in {str(source)!r} (a test/ "
                         "folder, or the \"test\" array of an .npz; a .npy holds training images only)")
    if scores_csv is not None:
        table_format(scores_csv, "--scores")
    det = GANAnomalyDetector(**{"random_state": 0, **(params or {}), "channels": "first"})
    labelled = test is not None and test.kinds is not None and len(set(test.kinds)) > 1 and "normal" in test.kinds
    if test is not None and not labelled:
        log.warning("%s: the test images carry no labels to evaluate against (a test/ folder needs a 'normal' or "
                    "'good' subfolder and one per defect kind; an .npz, test_kinds or test_labels): scores only, "
                    "no AUROC", source)
    run_id, start = None, time.perf_counter()
    if mlflow:
        det, run_id = _tracked_fit(det, source, mode, train, test, labelled, experiment=experiment,
                                   run_name=run_name, tracking_uri=tracking_uri, log_model=log_model)
    else:
        det.fit(train.images)
    fit_seconds = time.perf_counter() - start
    save(det, model_dir)
    aurocs: dict[str, float] = {}
    scores = None
    if test is not None:
        scores = score_table(det, test)
        if labelled:
            aurocs = auroc_per_kind(test.kinds, scores["combined"].to_numpy())
        if scores_csv is not None:
            write_table_atomic(scores, scores_csv)
        if run_id is not None:
            _log_run_outputs(run_id, tracking_uri, det, test, scores, aurocs)
    return {"model": det, "model_dir": Path(model_dir), "run_id": run_id, "auroc": aurocs, "scores": scores,
            "skipped": train.skipped + (test.skipped if test else []), "fit_seconds": fit_seconds}


def _load_splits(source, *, mode: str, size, on_error: str, channels: str) -> tuple[ImageSet, ImageSet | None]:
    """The training images and the test images (None when there are none), resized alike."""
    train = load_image_source(source, split="train", mode=mode, size=size, on_error=on_error, channels=channels)
    if train is None:
        raise ValueError(f"image source {str(source)!r} has a test/ folder but no train/ folder of normal images")
    if size is None and Path(source).is_dir():
        size = tuple(train.images.shape[2:])  # test images are resized to the training size
    if Path(source).is_file() and Path(source).suffix.lower() == ".npy":
        return train, None  # one array: the training images only (an .npz holds a "test" array)
    test = load_image_source(source, split="test", mode=mode, size=size, on_error=on_error, channels=channels)
    if test is not None and test.images.shape[1:] != train.images.shape[1:]:
        raise ValueError(f"image source {str(source)!r}: test images are {_shape(test)}, training images "
                         f"{_shape(train)}; give both splits one size and channel count")
    return train, test


def _shape(images: ImageSet) -> str:
    c, h, w = images.images.shape[1:]
    return f"{h}x{w} with {c} channel(s)"


def _tracked_fit(det, source, mode: str, train: ImageSet, test: ImageSet | None, labelled: bool, *,
                 experiment: str, run_name: str | None, tracking_uri: str | None, log_model: bool):
    """:func:`gananomaly.tracking.tracked_fit` of ``det`` on ``train``, evaluated on the test
    images when they are ``labelled``; returns ``(det, run_id)``."""
    from gananomaly.tracking import tracked_fit

    y_eval = (np.asarray(test.kinds) != "normal").astype(int) if labelled else None
    return tracked_fit(
        det, train.images, X_eval=test.images if labelled else None, y_eval=y_eval,
        experiment=experiment, run_name=run_name, tracking_uri=tracking_uri,
        extra_params={"data.source": str(source), "data.mode": mode, "data.n_train": len(train.images),
                      "data.skipped": len(train.skipped) + (len(test.skipped) if test else 0)},
        image_shape=tuple(train.images.shape[1:]), log_model=log_model,
    )


def _log_run_outputs(run_id: str, tracking_uri: str | None, det, test: ImageSet, scores: pd.DataFrame,
                     aurocs: dict[str, float]) -> None:
    """Add to the finished run: ``auroc_kind_<kind>`` metrics and the grid of the most
    anomalous test images' overlays with its JSON index."""
    from mlflow import MlflowClient

    from gananomaly.tracking import resolve_tracking_uri

    # The fit and the model are done: a metric or a picture is not worth failing for.
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    try:
        for kind, value in aurocs.items():
            client.log_metric(run_id, f"auroc_kind_{kind}", value)
    except Exception as exc:
        log.warning("could not log per-kind AUROC to MLflow run %s: %s", run_id, exc)
    try:
        grid, tiles = top_anomaly_grid(det, test, scores["score"].to_numpy())
        client.log_image(run_id, grid, "anomaly_maps/top_anomalies.png")
        client.log_dict(run_id, {"tiles": tiles, "tile_shape": list(grid_tile_shape(test.images.shape[2:])),
                                 "gap": GRID_GAP}, "anomaly_maps/top_anomalies.json")
    except Exception as exc:
        log.warning("could not log the anomaly-map grid to MLflow run %s: %s", run_id, exc)


# ---------------------------------------------------------------------------------- demo
def run_image_demo(
    task: str = "digits",
    *,
    digits: tuple[int, ...] | list[int] | None = None,
    epochs: int | str = "auto",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """AUROC of the detector next to IsolationForest on the raw pixels, measured in the same run.

    Parameters
    ----------
    task : {"digits", "texture"}
        ``"digits"``: scikit-learn's 8x8 digits, one-class protocol (each digit in
        ``digits`` normal in turn, every other digit anomalous); one row per digit plus
        ``mean``. ``"texture"``: grey 32x32 photograph patches with planted defects; one
        row per defect kind plus ``all``.
    digits : sequence of int, optional
        Default: 0..9.
    epochs : int or "auto"
    seed : int
        Seeds the detector, IsolationForest and the data split.
    params : dict, optional
        More detector parameters.
    verbose : bool
        Print each row as it is measured and the final table.

    Returns
    -------
    DataFrame with columns ``gan_combined``, ``gan_reconstruction``, ``gan_discriminator``,
    ``iforest`` (AUROCs) and ``fit_seconds``.
    """
    from gananomaly.pipelines.image_data import digits_one_class, texture_defects

    fit = dict(epochs=epochs, seed=seed, params=params)
    rows: dict[str, dict[str, float]] = {}
    if task == "digits":
        for digit in (range(10) if digits is None else digits):
            X_train, X_test, y_test = digits_one_class(int(digit), seed=seed)
            name = f"digit {int(digit)}"
            rows[name] = _auroc_row(*_fit_pair(X_train, **fit), X_test, y_test)
            if verbose:
                print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
        table = pd.DataFrame(rows).T
        table.loc["mean"] = table.mean()
    elif task == "texture":
        X_train, X_test, kinds = texture_defects(seed=seed)
        pair = _fit_pair(X_train, **fit)
        normal = kinds == "normal"
        for kind in [*sorted(set(kinds) - {"normal"}), "all"]:
            mask = np.ones(len(kinds), bool) if kind == "all" else (normal | (kinds == kind))
            rows[kind] = _auroc_row(*pair, X_test[mask], (~normal[mask]).astype(int))
        table = pd.DataFrame(rows).T
    else:
        raise ValueError(f"task must be 'digits' or 'texture', got {task!r}")
    if verbose:
        print(table.round(3).to_string())
    return table


def _fit_pair(X_train: np.ndarray, *, epochs, seed: int, params: dict[str, Any] | None):
    """``(detector, IsolationForest on the raw pixels, the detector's fit seconds)``, both fitted."""
    from sklearn.ensemble import IsolationForest

    from gananomaly import GANAnomalyDetector

    start = time.perf_counter()
    det = GANAnomalyDetector(epochs=epochs, random_state=seed, **(params or {})).fit(X_train)
    fit_s = time.perf_counter() - start
    iforest = IsolationForest(random_state=seed).fit(X_train.reshape(len(X_train), -1))
    return det, iforest, fit_s


def _auroc_row(det, iforest, fit_s: float, X_test: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUROC of the detector's scores and of IsolationForest on ``X_test``, and the fit time."""
    from sklearn.metrics import roc_auc_score

    comps = det.score_components(X_test)
    flat = X_test.reshape(len(X_test), -1)
    return {"gan_combined": roc_auc_score(y, comps["combined"]),
            "gan_reconstruction": roc_auc_score(y, comps["reconstruction"]),
            "gan_discriminator": roc_auc_score(y, comps["discriminator"]),
            "iforest": roc_auc_score(y, -iforest.score_samples(flat)),
            "fit_seconds": fit_s}


def conv_throughput(
    sizes: tuple[int, ...] = (32, 64),
    *,
    channels: int = 3,
    n_images: int = 1024,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    extra_epochs: int = 3,
    repeats: int = 3,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Scoring and training speed of the convolutional detector, in images per second.

    Training speed is the steady state of the training steps: for each side in ``sizes`` a
    detector is fitted on ``n_images`` random images for ``1 + extra_epochs`` GAN epochs and
    as many encoder epochs, and ``train_images_per_s`` is the images trained on in the epochs
    after each phase's first over their time (read at the end of every epoch). The first
    epochs, the fixed costs of a fit (building the networks, the final scoring of the training
    rows) and a process's one-time costs (a small warm-up fit runs first) do not count.
    Fidelity measurement is off (``validation_fraction=0``: every image is trained on). Then
    the median over ``repeats`` of scoring the same images gives ``score_images_per_s``. Speed
    does not depend on what the weights learned. ``params`` are further detector parameters
    (e.g. ``{"hidden_dims": (8,)}`` for a narrower network).

    Returns
    -------
    DataFrame indexed by size with ``train_images_per_s``, ``score_images_per_s``,
    ``device`` and ``precision``.
    """
    from gananomaly import Callback, GANAnomalyDetector

    if isinstance(extra_epochs, bool) or not isinstance(extra_epochs, int) or extra_epochs < 1:
        raise ValueError(f"extra_epochs must be an int >= 1, got {extra_epochs!r}")

    class EpochClock(Callback):
        def __init__(self):
            self.ends: dict[str, list[float]] = {}

        def on_epoch_end(self, estimator, logs):
            self.ends.setdefault(logs.get("phase", "gan"), []).append(time.perf_counter())

    rng = np.random.RandomState(seed)
    kwargs = {"batch_size": batch_size, "device": device, "precision": precision, "validation_fraction": 0.0,
              "random_state": seed, **(params or {})}

    def clocked_fit(X: np.ndarray, epochs: int):
        clock = EpochClock()
        det = GANAnomalyDetector(epochs=epochs, encoder_epochs=epochs, callbacks=[clock], **kwargs)
        with warnings.catch_warnings():  # a few epochs on noise: a collapse warning says nothing here
            warnings.simplefilter("ignore")
            det.fit(X)
        return det, sum(ends[-1] - ends[0] for ends in clock.ends.values())

    clocked_fit(rng.rand(2 * batch_size, channels, 8, 8).astype(np.float32), 1)  # one-time costs
    rows = {}
    for size in sizes:
        X = rng.rand(n_images, channels, size, size).astype(np.float32)
        det, train_s = clocked_fit(X, 1 + extra_epochs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            det.score_samples(X)
            times.append(time.perf_counter() - start)
        amp = det.score_config_.amp_dtype
        trained = 2 * extra_epochs * n_images  # both phases; exact when batch_size divides n_images
        rows[f"{size}x{size}"] = {"train_images_per_s": trained / train_s,
                                  "score_images_per_s": n_images / float(np.median(times)),
                                  "device": str(det.device_), "precision": "fp32" if amp is None else str(amp)}
    return pd.DataFrame(rows).T
