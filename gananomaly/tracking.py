"""MLflow tracking around the estimator: tracked fits, the logging callback and run comparison.

The estimator knows nothing about MLflow. :func:`tracked_fit` wraps a whole fit in a run
(parameters, data description, losses, evaluation metrics, plots and the model, stored with the
:mod:`gananomaly.mlflow` flavor); ``gananomaly runs compare`` prints the runs of an experiment
side by side. One concern per module, every public name importable from here:

* :mod:`gananomaly.tracking_store`: the store URI, reaching it, experiments, the local fallback;
* :mod:`gananomaly.tracking_callback`: :class:`MLflowCallback` (per-epoch losses as metrics);
* :mod:`gananomaly.tracking_log`: what a tracked run logs (:class:`~gananomaly.tracking_log.TrackedRun`);
* :mod:`gananomaly.tracking_plots`: its figures;
* :mod:`gananomaly.tracking_runs`: :func:`compare_runs` and the ``runs`` command;
* this module: :func:`tracked_fit`, the run's life (open, end FINISHED/FAILED/KILLED, fall back).

The default store is the SQLite file ``mlflow.db`` in the working directory
(``sqlite:///mlflow.db``), or ``$MLFLOW_TRACKING_URI`` when set. Experiments created here keep
their artifacts beside a SQLite store (``<its folder>/mlartifacts/<experiment>``), wherever the
run starts.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Any

from gananomaly.tracking_callback import MLflowCallback
from gananomaly.tracking_log import TrackedRun
from gananomaly.tracking_runs import compare_runs, register_cli
from gananomaly.tracking_store import (
    DEFAULT_TRACKING_URI,
    FALLBACK_DIR,
    TrackingUnavailableError,
    experiment_id,
    is_local_store_error,
    is_tracking_error,
    probe_http,
    resolve_tracking_uri,
    save_fallback,
    tracking_scope,
    unavailable_error,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "FALLBACK_DIR",
    "MLflowCallback",
    "Terminated",
    "TrackingUnavailableError",
    "compare_runs",
    "register_cli",
    "resolve_tracking_uri",
    "tracked_fit",
]

log = logging.getLogger(__name__)

_ERROR_TAG = "gananomaly.error"
_MAX_TAG = 5000


def tracked_fit(model, X, *, X_eval=None, y_eval=None, experiment: str = "gananomaly", run_name: str | None = None,
                tracking_uri: str | None = None, log_model: bool = True, extra_params: dict | None = None,
                image_shape: tuple[int, ...] | None = None, tags: dict | None = None, context=None,
                context_eval=None) -> tuple[Any, str | None]:
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
        More parameters to log (e.g. the data set name). A name the run records itself (a
        detector parameter, ``n_samples``, ``n_features``, ``data_shape``, ``feature_names``,
        ``pipeline_steps``) or one MLflow does not accept is refused before the run opens.
    image_shape : tuple of int, optional
        ``(C, H, W)`` of one sample: log image grids, reshaping flat samples to it.
    tags : dict, optional
    context, context_eval : array-like, optional
        Each training row's context (and each evaluation row's) for a conditional fit (see
        :meth:`GANAnomalyDetector.fit`); given as a named pandas Series or DataFrame, the logged
        model reads it from the served table's columns of those names.

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

    if not isinstance(experiment, str):
        raise TypeError(f"experiment must be the MLflow experiment's name (a str), got {type(experiment).__name__}")
    job = TrackedRun.prepare(model, X, X_eval=X_eval, y_eval=y_eval, extra_params=extra_params,
                             image_shape=image_shape, log_model=log_model, uri=resolve_tracking_uri(tracking_uri),
                             experiment=experiment, context=context, context_eval=context_eval)
    with tracking_scope(job.uri):
        run_id = _open_run(mlflow, job, run_name, tags)
        try:
            with _sigterm_raises():
                job.log(mlflow)
        except BaseException as exc:
            _close_failed_run(mlflow, job, run_id, exc)
            raise
        mlflow.end_run("FINISHED")
    return model, run_id


def _open_run(mlflow, job: TrackedRun, run_name: str | None, tags: dict | None) -> str:
    """Start the run (nested under the caller's active run, if any) and return its id.

    A store that cannot be reached, or a local store that cannot be created or written (a missing
    or read-only directory, a locked or read-only SQLite file), is a tracking failure: the model
    is fitted without tracking, saved locally, and :class:`TrackingUnavailableError` raised.
    """
    try:
        probe_http(job.uri)
        exp_id = experiment_id(job.experiment, job.uri)
        active = mlflow.active_run()
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name,
                               tags={str(k): str(v) for k, v in (tags or {}).items()}, nested=active is not None)
        if active is not None:
            _drop_foreign_parent(mlflow, run.info.run_id, active.info.run_id)
    except Exception as exc:
        if not (is_tracking_error(exc) or is_local_store_error(exc)):
            raise
        log.warning("MLflow store %s unreachable (%s); fitting without tracking", job.uri, exc)
        job.model.fit(job.X)
        raise unavailable_error(job.model, job.uri, job.experiment, exc) from exc
    return run.info.run_id


def _drop_foreign_parent(mlflow, run_id: str, parent_id: str) -> None:
    """A run nested under the caller's active run records it as its parent; when that run
    lives in another store (``tracking_uri`` differs from the caller's), the tag would name a
    run this store does not have: it is removed."""
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_run(parent_id)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            return  # a store that failed to answer: the tag stays as MLflow set it
        with contextlib.suppress(Exception):  # the run is open: a failed removal must not leave it running
            client.delete_tag(run_id, "mlflow.parentRunId")


def _close_failed_run(mlflow, job: TrackedRun, run_id: str, exc: BaseException) -> None:
    """End the run KILLED (Ctrl-C, SIGTERM) or FAILED, never left RUNNING, and keep the model.

    Raises :class:`TrackingUnavailableError` when the store went away (the model fitted and saved
    locally); otherwise records the error on the run and returns, for the caller to re-raise it,
    after saving a model whose fit had succeeded to the fallback directory (named in a note).
    """
    status = "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated, SystemExit)) else "FAILED"
    tracking_down = isinstance(exc, Exception) and is_tracking_error(exc)
    if not tracking_down:
        _record_error(run_id, exc)
    with contextlib.suppress(Exception):
        mlflow.end_run(status)
    if tracking_down:
        if not job.fitted:
            job.model.fit(job.X)
        raise unavailable_error(job.model, job.uri, job.experiment, exc) from exc
    if job.fitted and isinstance(exc, Exception):
        # the fit succeeded and something after it failed: keep the model
        path = save_fallback(job.model, job.experiment)
        if path is not None:
            log.warning("the fitted model was saved to %s (load it with gananomaly.load)", path)
            with contextlib.suppress(Exception):
                exc.add_note(f"the fitted model was saved to {str(path)!r}")


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


def _record_error(run_id: str, exc: BaseException) -> None:
    """Best effort: the error message as a tag and the traceback as ``error.txt``."""
    from mlflow import MlflowClient

    text = f"{type(exc).__name__}: {exc}"
    client = MlflowClient()
    with contextlib.suppress(Exception):
        client.set_tag(run_id, _ERROR_TAG, text[:_MAX_TAG])
    with contextlib.suppress(Exception):
        client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
