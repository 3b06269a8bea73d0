"""The MLflow logging callback: per-epoch losses and fidelity of a fit as step metrics of a run.

The estimator knows nothing about MLflow; :class:`MLflowCallback` observes a fit through the
:class:`gananomaly.Callback` hooks. :func:`gananomaly.tracking.tracked_fit` adds one to the fit it
tracks; it can also be passed to ``fit`` inside a run of one's own.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from gananomaly.fidelity import FIDELITY_KEYS
from gananomaly.training import Callback

__all__ = ["MLflowCallback"]

log = logging.getLogger(__name__)


class MLflowCallback(Callback):
    """Log per-epoch losses of a fit to an MLflow run as step metrics.

    Metrics are named ``<phase>/<loss>``: ``gan/d_loss``, ``gan/g_loss``, ``gan/g_std_ratio``,
    the held-out fidelity measures ``gan/precision``, ``gan/recall``, ``gan/density``,
    ``gan/coverage``, ``gan/reverse_density`` and ``gan/fidelity`` at the epochs where they
    were measured,
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

    def on_fit_exit(self, estimator: Any) -> None:
        """A failed or interrupted fit keeps the losses of the epochs it completed (those runs
        are the ones someone debugs); a store error here never hides the fit's own error."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the fit's exception, if any, is the one to see
            log.warning("could not send the last epochs' metrics to MLflow: %s", exc)

    def flush(self) -> None:
        """Send the buffered metrics now."""
        if not self._pending or self._client is None:
            return
        pending, self._pending = self._pending, []
        # log_batch accepts at most 1000 metrics per call.
        for start in range(0, len(pending), 1000):
            self._client.log_batch(self._run_id, metrics=pending[start : start + 1000])
