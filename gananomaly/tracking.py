"""MLflow tracking around the estimator: a logging callback, tracked fits and run comparison.

The estimator knows nothing about MLflow. :class:`MLflowCallback` observes a fit through the
:class:`gananomaly.Callback` hooks and logs per-epoch losses; :func:`tracked_fit` wraps a whole
fit in a run (parameters, data description, losses, evaluation metrics, plots and the model,
stored with the :mod:`gananomaly.mlflow` flavor). ``gananomaly runs compare`` prints the runs
of an experiment side by side.

The default store is the SQLite file ``mlflow.db`` in the working directory
(``sqlite:///mlflow.db``), or ``$MLFLOW_TRACKING_URI`` when set.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from gananomaly.fidelity import FIDELITY_KEYS
from gananomaly.training import Callback

__all__ = [
    "DEFAULT_TRACKING_URI",
    "FALLBACK_DIR",
    "MLflowCallback",
    "TrackingUnavailableError",
    "compare_runs",
    "register_cli",
    "resolve_tracking_uri",
    "tracked_fit",
]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Where :func:`tracked_fit` saves a fitted model that could not be logged (relative to the cwd).
FALLBACK_DIR = "gananomaly-untracked"
_ERROR_TAG = "gananomaly.error"
_MODEL_URI_TAG = "gananomaly.model_uri"
_MAX_TAG = 5000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    Parameters
    ----------
    uri : str or None
        An explicit tracking URI (``sqlite:///path.db``, ``http://host:port``, ``file:///dir``).

    Returns
    -------
    str
    """
    if uri:
        return str(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return DEFAULT_TRACKING_URI


class TrackingUnavailableError(ConnectionError):
    """The tracking store could not be reached; the fitted model was saved locally instead.

    Attributes
    ----------
    tracking_uri : str
        The URI that failed.
    model : estimator
        The fitted detector or pipeline (nothing is lost).
    fallback_path : pathlib.Path or None
        The directory the fitted model was saved to (None if saving failed as well).
    """

    def __init__(self, message: str, *, tracking_uri: str, model: Any, fallback_path: Path | None):
        super().__init__(message)
        self.tracking_uri = tracking_uri
        self.model = model
        self.fallback_path = fallback_path


@contextlib.contextmanager
def _tracking_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` and restore the caller's settings afterwards.

    ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI``; both are restored so a
    tracked fit never changes where the caller's own MLflow calls go.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as _tu

    old_global = getattr(_tu, "_tracking_uri", None)
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def _probe_http(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before MLflow's retries with back-off) when an HTTP store's port is closed."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"cannot connect to MLflow tracking server {uri!r}: {exc}") from exc


# ---------------------------------------------------------------------------------- callback
class MLflowCallback(Callback):
    """Log per-epoch losses of a fit to an MLflow run as step metrics.

    Metrics are named ``<phase>/<loss>``: ``gan/d_loss``, ``gan/g_loss``, ``gan/g_std_ratio``,
    the held-out fidelity measures ``gan/precision``, ``gan/recall``, ``gan/density``,
    ``gan/coverage`` and ``gan/fidelity`` at the epochs where they were measured,
    (and ``gan/e_loss`` for ``encoder="bigan"``) and ``encoder/e_loss`` for the izif encoder
    phase; the step is the epoch within its phase. Non-finite values are skipped.

    Parameters
    ----------
    run_id : str or None, default=None
        The run to log to. None: the active run when the fit begins.
    tracking_uri : str or None, default=None
        None: MLflow's current tracking URI.
    flush_every : int, default=10
        Metrics are sent in batches of this many epochs (and at the end of the fit), which
        keeps a remote store from being hit once per epoch.
    """

    def __init__(self, run_id: str | None = None, *, tracking_uri: str | None = None, flush_every: int = 10):
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.flush_every = flush_every
        self._pending: list = []
        self._run_id: str | None = None
        self._client = None

    def on_fit_begin(self, estimator: Any, info: dict[str, Any]) -> None:
        import mlflow
        from mlflow import MlflowClient

        run_id = self.run_id
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise RuntimeError("MLflowCallback: no run_id given and no active MLflow run; "
                                   "start one with mlflow.start_run() or use gananomaly.tracking.tracked_fit")
            run_id = active.info.run_id
        self._run_id = run_id
        self._client = MlflowClient(tracking_uri=self.tracking_uri or mlflow.get_tracking_uri())
        self._pending = []

    def on_epoch_end(self, estimator: Any, logs: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        if self._client is None:  # used without on_fit_begin (e.g. a custom loop)
            self.on_fit_begin(estimator, {})
        phase = logs.get("phase", "gan")
        step = int(logs.get("epoch", 0))
        now = int(time.time() * 1000)
        for key in ("d_loss", "g_loss", "e_loss", "g_std_ratio", *FIDELITY_KEYS):
            value = logs.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._pending.append(Metric(f"{phase}/{key}", float(value), now, step))
        if (step + 1) % max(1, int(self.flush_every)) == 0:
            self.flush()

    def on_fit_end(self, estimator: Any) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the buffered metrics now."""
        if not self._pending or self._client is None:
            return
        pending, self._pending = self._pending, []
        # log_batch accepts at most 1000 metrics per call.
        for start in range(0, len(pending), 1000):
            self._client.log_batch(self._run_id, metrics=pending[start : start + 1000])


# ---------------------------------------------------------------------------------- helpers
def _split_model(model) -> tuple[Any, Any, str | None]:
    """(preprocessing or None, detector, detector step name or None)."""
    from sklearn.pipeline import Pipeline

    from gananomaly.estimator import GANAnomalyDetector

    if isinstance(model, Pipeline):
        name, det = model.steps[-1]
        if not isinstance(det, GANAnomalyDetector):
            raise TypeError(f"model: the last step of the pipeline must be a GANAnomalyDetector, "
                            f"got {type(det).__name__}")
        return (model[:-1] if len(model.steps) > 1 else None), det, name
    if not isinstance(model, GANAnomalyDetector):
        raise TypeError(f"model must be a GANAnomalyDetector or a Pipeline ending in one, got {type(model).__name__}")
    return None, model, None


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = list(value)
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _collect_params(model, det, extra_params: dict | None) -> dict[str, str]:
    params = {k: _param_value(v) for k, v in det.get_params(deep=False).items() if k != "callbacks"}
    prep, _, _ = _split_model(model)
    if prep is not None:
        params["pipeline_steps"] = _param_value([f"{n}:{type(s).__name__}" for n, s in model.steps])
    for k, v in (extra_params or {}).items():
        params[str(k)] = _param_value(v)
    return params


def _feature_names(X) -> list[str] | None:
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    return None


def _shape(X) -> tuple[int, ...]:
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.asarray(X).shape
    return tuple(int(s) for s in shape)


def _is_image(det, X, image_shape) -> bool:
    if image_shape is not None:
        return True
    try:
        return len(_shape(X)) in (3, 4) and hasattr(det, "generate") and hasattr(det, "reconstruct")
    except Exception:  # noqa: BLE001 - an odd input type only means "not an image"
        return False


def _save_fallback(model, experiment: str) -> Path | None:
    from gananomaly.persistence import save

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in experiment) or "run"
    root = Path(FALLBACK_DIR)
    try:
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{safe}-{stamp}-{os.getpid()}"
        save(model, path)
        return path.resolve()
    except Exception as exc:  # noqa: BLE001 - the caller still gets the model object
        log.error("could not save the fitted model to %s: %s", root, exc)
        return None


def _unavailable(model, uri: str, experiment: str, exc: BaseException) -> TrackingUnavailableError:
    path = _save_fallback(model, experiment)
    where = (f"the fitted model was saved to {str(path)!r} (load it with gananomaly.load)" if path is not None
             else "saving the fitted model locally failed too; it is available as this error's .model")
    return TrackingUnavailableError(
        f"MLflow tracking store {uri!r} is unreachable ({type(exc).__name__}: {exc}); {where}",
        tracking_uri=uri, model=model, fallback_path=path,
    )


def _check_eval(X_eval, y_eval) -> np.ndarray | None:
    if (X_eval is None) != (y_eval is None):
        raise ValueError("X_eval and y_eval must be given together (y_eval: 1 = anomaly, 0 = normal)")
    if y_eval is None:
        return None
    from gananomaly.metrics import _check_labels

    y = _check_labels(y_eval)
    if len(y) != _shape(X_eval)[0]:
        raise ValueError(f"y_eval has {len(y)} labels but X_eval has {_shape(X_eval)[0]} rows")
    return y


# ---------------------------------------------------------------------------------- plots
def _figure(width: float = 6.0, height: float = 4.0):
    # A bare Figure renders with the Agg canvas and never touches pyplot's global state.
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine would cost a second full draw per figure.
    fig = Figure(figsize=(width, height), dpi=90)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.13, top=0.9, wspace=0.3, hspace=0.3)
    return fig


def _plot_losses(history: dict[str, list[float]]):
    fig = _figure(8, 4)
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


# Tracked table runs explain this many of the highest-scoring evaluation rows (top 3 features each).
TOP_EXPLAINED = 20


def _plot_histogram(scores: pd.DataFrame, y: np.ndarray, component: str, threshold: float | None = None):
    fig = _figure()
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


def _plot_roc(scores: pd.DataFrame, y: np.ndarray, metrics: pd.DataFrame):
    from sklearn.metrics import roc_curve

    fig = _figure(5, 5)
    ax = fig.subplots()
    for name in scores.columns:
        fpr, tpr, _ = roc_curve(y, scores[name].to_numpy())
        ax.plot(fpr, tpr, label=f"{name} (AUROC {metrics.loc[name, 'auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    return fig


def _plot_grid(images: np.ndarray, title: str, ncols: int = 8):
    """A grid of (n, C, H, W) images, each scaled to [0, 1] for display."""
    n = images.shape[0]
    nrows = int(math.ceil(n / ncols))
    fig = _figure(ncols * 1.2, nrows * 1.2 + 0.4)
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


def _as_images(arr: np.ndarray, image_shape) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if image_shape is not None:
        return arr.reshape((arr.shape[0],) + tuple(int(s) for s in image_shape))
    return arr


# ---------------------------------------------------------------------------------- tracked fit
def _parzen_metrics(det, Xt_eval, y: np.ndarray) -> dict[str, float]:
    """The 2014 paper's generator evaluation: Parzen-window log-likelihood of the held-out
    normal rows (bandwidth chosen on half of them, scored on the other half). Tabular only."""
    from gananomaly.parzen import evaluate_generator

    normal = np.asarray(Xt_eval, dtype=float)[y == 0] if np.ndim(Xt_eval) == 2 else None
    if normal is None or len(normal) < 20 or getattr(det, "context_categories_", None) is not None \
            or getattr(det, "context_mean_", None) is not None:
        return {}
    half = len(normal) // 2
    res = evaluate_generator(det, normal[:half], normal[half:], n_samples=5000)
    return {"parzen_log_likelihood": res.mean_log_likelihood, "parzen_bandwidth": res.bandwidth}


def _log_evaluation(mlflow, det, Xt_eval, y: np.ndarray) -> dict[str, float]:
    from gananomaly.metrics import evaluate_detector

    table = evaluate_detector(det, Xt_eval, y)
    metrics: dict[str, float] = {}
    for comp, row in table.iterrows():
        for col, value in row.items():
            if pd.notna(value):
                metrics[f"{col}_{comp}"] = float(value)
    metrics.update(_parzen_metrics(det, Xt_eval, y))
    mlflow.log_metrics(metrics)
    scores = det.score_components(Xt_eval)
    # the histogram shows anomaly scores (higher = more anomalous): the threshold is -offset_
    threshold = -float(det.offset_) if hasattr(det, "offset_") else None
    mlflow.log_figure(_plot_histogram(scores, y, getattr(det, "component", "combined"), threshold),
                      "plots/score_histogram.png")
    if threshold is not None:
        mlflow.log_metric("threshold", threshold)
    if hasattr(det, "explain") and getattr(det, "image_shape_", None) is None:
        top = np.argsort(-scores[getattr(det, "component", "combined")].to_numpy(), kind="stable")[:TOP_EXPLAINED]
        rows = Xt_eval.iloc[top] if hasattr(Xt_eval, "iloc") else np.asarray(Xt_eval)[top]
        explained = det.explain(rows, top=3)
        explained["row"] = top[explained["row"].to_numpy()]  # positions in the evaluation set
        mlflow.log_table(explained, "evaluation/top_anomalies_explained.json")
    mlflow.log_figure(_plot_roc(scores, y, table), "plots/roc_curve.png")
    mlflow.log_table(table.reset_index(names="component"), "evaluation/metrics.json")
    return metrics


def _log_image_grids(mlflow, det, Xt_eval, image_shape, n: int = 16) -> None:
    if hasattr(det, "generate"):
        try:
            samples = _as_images(det.generate(n, random_state=0), image_shape)
            if samples.ndim == 4:
                mlflow.log_figure(_plot_grid(samples, "generated samples"), "images/generated.png")
        except Exception as exc:  # noqa: BLE001 - a missing picture must not fail the run
            log.warning("could not log generated samples: %s", exc)
    if Xt_eval is not None and hasattr(det, "reconstruct"):
        try:
            batch = Xt_eval[:n]
            recon = _as_images(det.reconstruct(batch), image_shape)
            orig = _as_images(np.asarray(batch), image_shape)
            if recon.ndim == 4:
                both = np.concatenate([orig, recon]) if orig.shape[1:] == recon.shape[1:] else recon
                mlflow.log_figure(_plot_grid(both, "inputs (top) and reconstructions (bottom)", ncols=len(recon)),
                                  "images/reconstructions.png")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not log reconstructions: %s", exc)


def _run_tracked(mlflow, model, det, X, X_eval, y, *, image, image_shape, log_model: bool, params, uri,
                 state: dict) -> None:
    """Everything inside the active run, after it was opened; sets ``state["fitted"]`` after the fit."""
    mlflow.log_params(params)
    shape = _shape(X)
    mlflow.log_params({"n_samples": shape[0], "n_features": int(np.prod(shape[1:])) if len(shape) > 1 else 1,
                       "data_shape": "x".join(str(s) for s in shape)})
    names = _feature_names(X)
    if names is not None:
        mlflow.log_dict({"feature_names": names}, "data/feature_names.json")
        mlflow.log_param("feature_names", _param_value(",".join(names)))

    user_callbacks = det.callbacks
    callback = MLflowCallback(mlflow.active_run().info.run_id, tracking_uri=uri)
    det.set_params(callbacks=tuple(user_callbacks or ()) + (callback,))
    start = time.perf_counter()
    try:
        model.fit(X)
    finally:
        det.set_params(callbacks=user_callbacks)
    state["fitted"] = True
    fit_s = time.perf_counter() - start
    mlflow.log_metrics({"fit_time_s": fit_s, "n_epochs": float(getattr(det, "n_epochs_", 0))})
    fidelity = {f"fidelity_{k}" if k != "fidelity" else "fidelity": float(v)
                for k, v in (getattr(det, "fidelity_", None) or {}).items() if math.isfinite(float(v))}
    if fidelity:
        mlflow.log_metrics(fidelity)
    mlflow.set_tag("gananomaly.fitted_device", str(getattr(det, "device_", "")))
    mlflow.log_figure(_plot_losses(det.history_), "plots/loss_curves.png")

    prep, _, _ = _split_model(model)
    Xt_eval = None
    if X_eval is not None:
        Xt_eval = prep.transform(X_eval) if prep is not None else X_eval
        _log_evaluation(mlflow, det, Xt_eval, y)
    if image:
        source = Xt_eval
        if source is None:
            head = X.iloc[:16] if isinstance(X, pd.DataFrame) else X[:16]
            source = prep.transform(head) if prep is not None else head
        _log_image_grids(mlflow, det, source, image_shape)
    if log_model:
        from gananomaly import mlflow as flavor

        example = X.iloc[:5] if isinstance(X, pd.DataFrame) else np.asarray(X[:5])
        info = flavor.log_model(model, name="model", input_example=example)
        mlflow.set_tag(_MODEL_URI_TAG, info.model_uri)


def _experiment_id(name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing.

    Unlike ``mlflow.set_experiment`` this leaves the caller's active experiment unchanged.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {name!r} is deleted in {uri}; restore it (mlflow experiments restore) "
                         "or choose another name")
    return exp.experiment_id


def _is_tracking_error(exc: BaseException) -> bool:
    """An error from talking to the store (as opposed to one from the data or the fit)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        # rest_utils wraps transport failures as "API request to <url> failed with [timeout] exception";
        # 502/503/504 come from a proxy in front of a server that is down. A 4xx is a real error.
        return any(s in text for s in ("failed with exception", "failed with timeout exception",
                                       "Max retries exceeded", "Connection refused", "Failed to establish",
                                       "error code 502", "error code 503", "error code 504"))
    return False


def _is_local_store_error(exc: BaseException) -> bool:
    """A file-system or database error from opening a local (file or SQLite) store."""
    chain = [exc, exc.__cause__, exc.__context__]
    return any(isinstance(e, OSError) or type(e).__name__ in ("OperationalError", "DatabaseError")
               for e in chain if e is not None)


def tracked_fit(
    model,
    X,
    *,
    X_eval=None,
    y_eval=None,
    experiment: str = "gananomaly",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    log_model: bool = True,
    extra_params: dict | None = None,
    image_shape: tuple[int, ...] | None = None,
    tags: dict | None = None,
) -> tuple[Any, str | None]:
    """Fit ``model`` on ``X`` inside an MLflow run and log everything about it.

    The run records every detector parameter (and ``extra_params``), the data shape and
    feature names, per-epoch losses (see :class:`MLflowCallback`), the fit time, the loss
    curves, and, when ``X_eval``/``y_eval`` are given, AUROC/AUPRC per score component
    (``auroc_combined``, ``auprc_reconstruction``, ...), F1 of the component behind
    ``predict`` at the contamination threshold, a score histogram (normal vs anomalous) and
    the ROC curves. Image models also get grids of generated samples and reconstructions.
    Finally the fitted model is logged with the :mod:`gananomaly.mlflow` flavor (artifact
    ``model``, its ``models:/<model_id>`` URI in the tag ``gananomaly.model_uri``).

    Parameters
    ----------
    model : GANAnomalyDetector or Pipeline ending in one
    X : array-like
        Training data (normal samples).
    X_eval, y_eval : array-like, optional
        Labelled evaluation data (``y_eval``: 1 = anomaly, 0 = normal); both or neither.
    experiment : str, default="gananomaly"
        Experiment name (created when missing).
    run_name : str, optional
    tracking_uri : str, optional
        Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the working directory.
        The caller's own MLflow settings are left unchanged.
    log_model : bool, default=True
    extra_params : dict, optional
        More parameters to log (e.g. the data set name).
    image_shape : tuple of int, optional
        ``(C, H, W)`` of one sample: log image grids, reshaping flat samples to it.
    tags : dict, optional

    Returns
    -------
    (model, run_id)
        The fitted model (the same object) and the MLflow run id.

    Raises
    ------
    TrackingUnavailableError
        (a ``ConnectionError``) The tracking store cannot be reached. The model is fitted
        anyway and saved to ``./gananomaly-untracked/<experiment>-<time>-<pid>/``; the
        message names the URI and that directory, and the error carries ``.model`` and
        ``.fallback_path``. HTTP stores are probed first (5 s timeout), so a server that is
        down fails fast instead of waiting for MLflow's retries.
    Exception
        Whatever the fit (or the evaluation) raises, after the run was ended with status
        FAILED and the error recorded in the tag ``gananomaly.error`` and ``error.txt``;
        when the fit itself had succeeded, the model is saved to the fallback directory
        first (the error's note names it). Ctrl-C and SIGTERM end the run ``KILLED``.
    """
    import mlflow

    _, det, _ = _split_model(model)
    y = _check_eval(X_eval, y_eval)
    uri = resolve_tracking_uri(tracking_uri)
    params = _collect_params(model, det, extra_params)
    image = _is_image(det, X, image_shape)

    with _tracking_scope(uri):
        try:
            _probe_http(uri)
            experiment_id = _experiment_id(experiment, uri)
            active = mlflow.active_run()
            run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                                   tags={str(k): str(v) for k, v in (tags or {}).items()},
                                   nested=active is not None)
        except Exception as exc:
            # opening the store: a local store that cannot be created or written (a missing or
            # read-only directory, a locked or read-only SQLite file) is a tracking failure too
            if not (_is_tracking_error(exc) or _is_local_store_error(exc)):
                raise
            log.warning("MLflow store %s unreachable (%s); fitting without tracking", uri, exc)
            model.fit(X)
            raise _unavailable(model, uri, experiment, exc) from exc

        run_id = run.info.run_id
        status = "FINISHED"
        state = {"fitted": False}
        try:
            with _sigterm_raises():
                _run_tracked(mlflow, model, det, X, X_eval, y, image=image, image_shape=image_shape,
                             log_model=log_model, params=params, uri=uri, state=state)
        except BaseException as exc:
            # never left RUNNING: an interrupt (Ctrl-C, SIGTERM) ends the run KILLED, an error FAILED
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated, SystemExit)) else "FAILED"
            tracking_down = isinstance(exc, Exception) and _is_tracking_error(exc)
            if not tracking_down:
                _record_error(mlflow, run_id, exc)
            with contextlib.suppress(Exception):
                mlflow.end_run(status)
            if tracking_down:
                if not state["fitted"]:
                    model.fit(X)
                raise _unavailable(model, uri, experiment, exc) from exc
            if state["fitted"] and isinstance(exc, Exception):
                # the fit succeeded and something after it failed: keep the model
                path = _save_fallback(model, experiment)
                if path is not None:
                    log.warning("the fitted model was saved to %s (load it with gananomaly.load)", path)
                    with contextlib.suppress(Exception):
                        exc.add_note(f"the fitted model was saved to {str(path)!r}")
            raise
        mlflow.end_run(status)
    return model, run_id


class Terminated(BaseException):
    """SIGTERM arrived during a tracked fit (raised so the run can be ended KILLED)."""


@contextlib.contextmanager
def _sigterm_raises():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere the
    handler cannot be set and the default behaviour stays)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_error(mlflow, run_id: str, exc: BaseException) -> None:
    """Best effort: the error message as a tag and the traceback as ``error.txt``."""
    from mlflow import MlflowClient

    text = f"{type(exc).__name__}: {exc}"
    client = MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, _ERROR_TAG, text[:_MAX_TAG])
    with contextlib.suppress(Exception):
        client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")


# ---------------------------------------------------------------------------------- comparison
_LOWER_IS_BETTER = ("time", "loss")


def compare_runs(experiment: str, *, sort_by: str = "auroc_combined", tracking_uri: str | None = None,
                 max_runs: int = 50) -> pd.DataFrame:
    """A table of the runs of ``experiment``: differing params, AUROC per component, fit time.

    Parameters
    ----------
    experiment : str
        Experiment name.
    sort_by : str, default="auroc_combined"
        A metric name (``metrics.`` prefix optional). Times and losses sort ascending,
        everything else descending; runs without the metric go last.
    tracking_uri : str, optional
        Default as :func:`resolve_tracking_uri`.
    max_runs : int, default=50
        The most recent runs considered.

    Returns
    -------
    DataFrame indexed by run id with columns ``run_name``, ``status``, the parameters whose
    values differ between runs, ``auroc_*`` and ``fit_time_s``.

    Raises
    ------
    ValueError
        Unknown experiment, or ``sort_by`` is not a metric of any run.
    """
    import mlflow

    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    uri = resolve_tracking_uri(tracking_uri)
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if db is not None and db != ":memory:" and not os.path.exists(db):
        # Reading must not create an empty store as a side effect.
        raise ValueError(f"no MLflow store at {uri} ({os.path.abspath(db)} does not exist)")
    _probe_http(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment named {experiment!r} in {uri}")
    with _tracking_scope(uri):
        runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=int(max_runs),
                                  order_by=["attributes.start_time DESC"], output_format="pandas")
    sort_key = sort_by if sort_by.startswith("metrics.") else f"metrics.{sort_by}"
    if runs.empty:
        return pd.DataFrame(columns=["run_name", "status"])
    if sort_key not in runs.columns:
        available = sorted(c[len("metrics."):] for c in runs.columns if c.startswith("metrics."))
        raise ValueError(f"sort_by: no run of {experiment!r} has a metric {sort_by!r}; available: {available}")
    param_cols = [c for c in runs.columns if c.startswith("params.")]
    differing = [c for c in param_cols if runs[c].astype(str).nunique(dropna=False) > 1]
    metric_cols = sorted(c for c in runs.columns if c.startswith("metrics.auroc_"))
    if "metrics.fit_time_s" in runs.columns:
        metric_cols.append("metrics.fit_time_s")
    if sort_key not in metric_cols:
        metric_cols.append(sort_key)
    table = pd.DataFrame(index=runs["run_id"].to_numpy())
    table.index.name = "run_id"
    table["run_name"] = runs.get("tags.mlflow.runName", pd.Series([""] * len(runs))).to_numpy()
    table["status"] = runs["status"].to_numpy()
    for c in differing:
        table[c[len("params."):]] = runs[c].to_numpy()
    for c in metric_cols:
        table[c[len("metrics."):]] = runs[c].to_numpy(dtype=float)
    ascending = any(s in sort_key for s in _LOWER_IS_BETTER)
    return table.sort_values(sort_key[len("metrics."):], ascending=ascending, na_position="last", kind="stable")


def _cmd_compare(args) -> int:
    try:
        table = compare_runs(args.experiment, sort_by=args.sort_by, tracking_uri=args.tracking_uri,
                             max_runs=args.max)
    except ConnectionError as exc:
        print(f"gananomaly runs compare: error: {exc}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"experiment {args.experiment!r} has no runs")
        return 0
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def register_cli(subparsers) -> None:
    """Add ``gananomaly runs compare`` to the ``gananomaly`` command."""
    runs = subparsers.add_parser("runs", help="inspect MLflow runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    runs_sub.required = True
    compare = runs_sub.add_parser("compare", help="table of the runs of an experiment, sorted by a metric")
    compare.add_argument("--experiment", required=True, help="MLflow experiment name")
    compare.add_argument("--sort-by", default="auroc_combined",
                         help="metric to sort by (default: auroc_combined; times/losses ascending)")
    compare.add_argument("--tracking-uri", default=None,
                         help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    compare.add_argument("--max", type=int, default=50, help="most recent runs to consider (default: 50)")
    compare.set_defaults(func=_cmd_compare)

