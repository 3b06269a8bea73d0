"""What a tracked run logs: parameters, data description, losses, evaluation, figures, the model.

:class:`TrackedRun` holds one tracked fit's inputs, checked before anything starts; its
:meth:`TrackedRun.log` fits the model inside the active MLflow run and logs everything about it.
:func:`gananomaly.tracking.tracked_fit` opens and closes the run around it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gananomaly.images import to_channels_first
from gananomaly.tracking_callback import MLflowCallback
from gananomaly.tracking_plots import as_images, plot_grid, plot_histogram, plot_losses, plot_roc

__all__ = ["MODEL_URI_TAG", "TOP_EXPLAINED", "TrackedRun", "check_eval", "log_evaluation", "log_image_grids",
           "split_model"]

log = logging.getLogger("gananomaly.tracking")

#: The run tag holding the logged model's ``models:/<model_id>`` URI.
MODEL_URI_TAG = "gananomaly.model_uri"
#: Tracked table runs explain this many of the highest-scoring evaluation rows (top 3 features each).
TOP_EXPLAINED = 20


def split_model(model) -> tuple[Any, Any, str | None]:
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
    prep, _, _ = split_model(model)
    if prep is not None:
        params["pipeline_steps"] = _param_value([f"{n}:{type(s).__name__}" for n, s in model.steps])
    if extra_params is not None and not isinstance(extra_params, dict):
        raise TypeError(f"extra_params must be a dict of parameter names to values, got {type(extra_params).__name__}")
    for k, v in (extra_params or {}).items():
        key = str(k)
        if key in params or key in RUN_PARAMS:
            raise ValueError(f"extra_params key {key!r} is a parameter the run records itself (the detector's "
                             f"parameters and {', '.join(sorted(RUN_PARAMS))}): its value would replace the real "
                             "one or make MLflow refuse the run; give it another name")
        _check_param_name(key)
        params[key] = _param_value(v)
    return params


# Parameters every tracked run logs besides the detector's own (see _log_inputs and _collect_params).
RUN_PARAMS = frozenset({"n_samples", "n_features", "data_shape", "feature_names", "pipeline_steps"})


def _check_param_name(key: str) -> None:
    """A parameter name MLflow accepts, checked before the run opens (MLflow's own message names
    the parameter by its position in the batch, after the run was created)."""
    try:
        from mlflow.utils.validation import _validate_param_name
    except ImportError:  # another MLflow layout: MLflow checks the name itself when logging
        return
    try:
        _validate_param_name(key)
    except Exception as exc:  # noqa: BLE001 - MlflowException; its text says which characters are allowed
        raise ValueError(f"extra_params key {key!r} is not a valid MLflow parameter name: "
                         f"{str(exc).splitlines()[0]}") from None


def _feature_names(X) -> list[str] | None:
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns]
    return None


def _shape(X) -> tuple[int, ...]:
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.asarray(X).shape
    return tuple(int(s) for s in shape)


def _check_image_shape(image_shape, X) -> tuple[int, ...] | None:
    """``image_shape`` as ``(C, H, W)`` ints, checked against one sample of ``X`` (the
    detector's own input: None when preprocessing comes first) before the fit (a shape that
    does not fit the samples only failed when the grids were logged)."""
    if image_shape is None:
        return None
    try:
        shape = tuple(int(v) for v in image_shape)
        ok = len(shape) == 3 and all(v > 0 for v in shape) and all(float(v) == int(v) for v in image_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"image_shape must be (C, H, W), three positive ints, got {image_shape!r}")
    if X is None:
        return shape
    per_sample = int(np.prod(_shape(X)[1:]))
    if per_sample != int(np.prod(shape)):
        raise ValueError(f"image_shape {shape} holds {int(np.prod(shape))} values, but one sample of X has "
                         f"{per_sample}")
    return shape


def _is_image(det, X, image_shape) -> bool:
    if image_shape is not None:
        return True
    try:
        return len(_shape(X)) in (3, 4) and hasattr(det, "generate") and hasattr(det, "reconstruct")
    except Exception:  # noqa: BLE001 - an odd input type only means "not an image"
        return False


def check_eval(X_eval, y_eval) -> np.ndarray | None:
    if (X_eval is None) != (y_eval is None):
        raise ValueError("X_eval and y_eval must be given together (y_eval: 1 = anomaly, 0 = normal)")
    if y_eval is None:
        return None
    from gananomaly.metrics import check_labels

    y = check_labels(y_eval)
    if len(y) != _shape(X_eval)[0]:
        raise ValueError(f"y_eval has {len(y)} labels but X_eval has {_shape(X_eval)[0]} rows")
    return y


def _check_eval_columns(X, X_eval) -> None:
    """X_eval has X's columns (a table) or X's row shape (an array): checked before the fit,
    which would otherwise run whole before the evaluation fails."""
    if isinstance(X, pd.DataFrame):
        if isinstance(X_eval, pd.DataFrame):
            missing = [str(c) for c in X.columns if c not in X_eval.columns]
            if missing:
                raise ValueError(f"X_eval lacks column(s) {missing[:10]} of X")
        return
    shape, shape_eval = _shape(X), _shape(X_eval)
    if len(shape) == len(shape_eval) and shape[1:] != shape_eval[1:]:
        raise ValueError(f"X_eval's rows have shape {shape_eval[1:]}, X's {shape[1:]}")


@dataclass
class TrackedRun:
    """One tracked fit: the model, its data and what to log, checked by :meth:`prepare`."""

    model: Any
    X: Any
    X_eval: Any
    y: np.ndarray | None
    image_shape: tuple[int, ...] | None
    log_model: bool
    params: dict[str, str]
    uri: str
    experiment: str
    det: Any = None
    image: bool = False
    #: each training row's context (and each evaluation row's), for a conditional fit
    context: Any = None
    context_eval: Any = None
    #: set once ``model.fit`` returned: a later failure must not lose the fitted model
    fitted: bool = field(default=False)

    @classmethod
    def prepare(cls, model, X, *, X_eval, y_eval, extra_params, image_shape, log_model: bool, uri: str,
                experiment: str, context=None, context_eval=None) -> TrackedRun:
        """Check the model and the evaluation data (before any fit) and collect the parameters."""
        prep, det, _ = split_model(model)
        y = check_eval(X_eval, y_eval)
        if X_eval is not None:
            _check_eval_columns(X, X_eval)
        if context_eval is not None and X_eval is None:
            raise ValueError("context_eval is given without X_eval: it is the context of the evaluation rows")
        if (context is None) != (context_eval is None) and X_eval is not None:
            raise ValueError("context and context_eval: give both or neither (the evaluation rows are scored "
                             "for their own context)")
        if context is not None and log_model:  # refused now, not by the model's logging after the whole fit
            from gananomaly.context import names

            if names(context) is None:
                raise ValueError("context: the logged model reads each row's context from the served table's "
                                 "column(s) by name, so give it as a named pandas Series (categories) or DataFrame "
                                 "(numbers), or pass log_model=False")
            if not isinstance(X, pd.DataFrame):
                raise ValueError("context: the logged model reads each row's context from the served table beside "
                                 "the features, so X must be a DataFrame with named columns (or pass log_model=False)")
        for name, values, rows in (("context", context, X), ("context_eval", context_eval, X_eval)):
            if values is not None and len(values) != len(rows):
                raise ValueError(f"{name} has {len(values)} values, but its data has {len(rows)} rows")
        image_shape = _check_image_shape(image_shape, X if prep is None else None)
        return cls(model, X, X_eval, y, image_shape, log_model, _collect_params(model, det, extra_params), uri,
                   experiment, det=det, image=_is_image(det, X, image_shape), context=context,
                   context_eval=context_eval)

    def log(self, mlflow) -> None:
        """Everything inside the active run, after it was opened; sets ``fitted`` after the fit."""
        model, det, X = self.model, self.det, self.X
        _log_inputs(mlflow, X, self.params)
        user_callbacks = det.callbacks
        callback = MLflowCallback(mlflow.active_run().info.run_id, tracking_uri=self.uri)
        det.set_params(callbacks=tuple(user_callbacks or ()) + (callback,))
        start = time.perf_counter()
        _, _, step = split_model(model)
        fit_params = {} if self.context is None else {"context" if step is None else f"{step}__context": self.context}
        try:
            model.fit(X, **fit_params)
        finally:
            det.set_params(callbacks=user_callbacks)
        self.fitted = True
        _log_fit(mlflow, det, time.perf_counter() - start)

        prep, _, _ = split_model(model)
        Xt_eval = None
        if self.X_eval is not None:
            Xt_eval = prep.transform(self.X_eval) if prep is not None else self.X_eval
            log_evaluation(mlflow, det, Xt_eval, self.y, model=model if prep is not None else None,
                           X_eval=self.X_eval, context=self.context_eval)
        if self.image:
            source = Xt_eval
            if source is None:
                head = X.iloc[:16] if isinstance(X, pd.DataFrame) else X[:16]
                source = prep.transform(head) if prep is not None else head
            log_image_grids(mlflow, det, source, self.image_shape)
        if self.log_model:
            from gananomaly import mlflow as flavor

            example = X.iloc[:5] if isinstance(X, pd.DataFrame) else np.asarray(X[:5])
            names = getattr(det, "context_names_", None)
            if names and isinstance(example, pd.DataFrame):  # the served table carries the context columns
                head = self.context.iloc[:5] if hasattr(self.context, "iloc") else np.asarray(self.context)[:5]
                given = pd.DataFrame(np.asarray(head, dtype=object).reshape(len(example), -1), columns=names)
                example = pd.concat([example.reset_index(drop=True), given], axis=1)
            info = flavor.log_model(model, name="model", input_example=example)
            mlflow.set_tag(MODEL_URI_TAG, info.model_uri)


def _log_inputs(mlflow, X, params: dict[str, str]) -> None:
    """The parameters, the data's shape and its feature names."""
    mlflow.log_params(params)
    shape = _shape(X)
    mlflow.log_params({"n_samples": shape[0], "n_features": int(np.prod(shape[1:])) if len(shape) > 1 else 1,
                       "data_shape": "x".join(str(s) for s in shape)})
    names = _feature_names(X)
    if names is not None:
        mlflow.log_dict({"feature_names": names}, "data/feature_names.json")
        mlflow.log_param("feature_names", _param_value(",".join(names)))


def _log_fit(mlflow, det, fit_s: float) -> None:
    """Fit time, epochs, the generator's fidelity, the device and the loss curves."""
    mlflow.log_metrics({"fit_time_s": fit_s, "n_epochs": float(getattr(det, "n_epochs_", 0))})
    fidelity = {f"fidelity_{k}" if k != "fidelity" else "fidelity": float(v)
                for k, v in (getattr(det, "fidelity_", None) or {}).items() if math.isfinite(float(v))}
    if fidelity:
        mlflow.log_metrics(fidelity)
    mlflow.set_tag("gananomaly.fitted_device", str(getattr(det, "device_", "")))
    mlflow.log_figure(plot_losses(det.history_), "plots/loss_curves.png")


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


def log_evaluation(mlflow, det, Xt_eval, y: np.ndarray, *, model=None, X_eval=None, context=None) -> dict[str, float]:
    """Metrics, plots and the explained top anomalies of the evaluation rows (``context``: each
    row's, for a conditional detector); with ``model`` (a pipeline ending in ``det``) and its
    untransformed ``X_eval`` the explanations name the input columns (one-hot groups summed),
    as ``explain_tabular`` does."""
    from gananomaly.metrics import evaluate_detector

    if context is not None:
        scored = det.score_table(Xt_eval, context=context)
    else:
        scored = det.score_table(Xt_eval) if hasattr(det, "score_table") else None  # the one pass
    table = evaluate_detector(det, Xt_eval, y, table=scored)
    metrics: dict[str, float] = {}
    for comp, row in table.iterrows():
        for col, value in row.items():
            if pd.notna(value):
                metrics[f"{col}_{comp}"] = float(value)
    metrics.update(_parzen_metrics(det, Xt_eval, y))
    mlflow.log_metrics(metrics)
    scores = scored.drop(columns=["score", "label"]) if scored is not None else det.score_components(Xt_eval)
    # the histogram shows anomaly scores (higher = more anomalous): the threshold is -offset_
    threshold = -float(det.offset_) if hasattr(det, "offset_") else None
    mlflow.log_figure(plot_histogram(scores, y, getattr(det, "component", "combined"), threshold),
                      "plots/score_histogram.png")
    if threshold is not None:
        mlflow.log_metric("threshold", threshold)
    if hasattr(det, "explain") and getattr(det, "image_shape_", None) is None:
        top = np.argsort(-scores[getattr(det, "component", "combined")].to_numpy(), kind="stable")[:TOP_EXPLAINED]
        ctx = None if context is None else (context.iloc[top] if hasattr(context, "iloc")
                                            else np.asarray(context)[top])
        if model is not None and isinstance(X_eval, pd.DataFrame):
            from gananomaly.explanations import explain_columns

            explained = explain_columns(model, X_eval.iloc[top], top=3, context=ctx)
        else:
            rows = Xt_eval.iloc[top] if hasattr(Xt_eval, "iloc") else np.asarray(Xt_eval)[top]
            explained = det.explain(rows, top=3, context=ctx)
        explained["row"] = top[explained["row"].to_numpy()]  # positions in the evaluation set
        mlflow.log_table(explained, "evaluation/top_anomalies_explained.json")
    mlflow.log_figure(plot_roc(scores, y, table), "plots/roc_curve.png")
    mlflow.log_table(table.reset_index(names="component"), "evaluation/metrics.json")
    return metrics


def log_image_grids(mlflow, det, Xt_eval, image_shape, n: int = 16) -> None:
    if hasattr(det, "generate"):
        try:
            samples = as_images(det.generate(n, random_state=0), image_shape)
            if samples.ndim == 4:
                mlflow.log_figure(plot_grid(samples, "generated samples"), "images/generated.png")
        except Exception as exc:  # noqa: BLE001 - a missing picture must not fail the run
            log.warning("could not log generated samples: %s", exc)
    if Xt_eval is not None and hasattr(det, "reconstruct"):
        try:
            batch = Xt_eval[:n]
            recon = as_images(det.reconstruct(batch), image_shape)
            orig = np.asarray(batch)
            if getattr(det, "image_shape_", None) is not None:  # the caller's layout, as reconstructions have it
                orig = to_channels_first(orig, getattr(det, "channels", "auto"))
            orig = as_images(orig, image_shape)
            if recon.ndim == 4:
                both = np.concatenate([orig, recon]) if orig.shape[1:] == recon.shape[1:] else recon
                mlflow.log_figure(plot_grid(both, "inputs (top) and reconstructions (bottom)", ncols=len(recon)),
                                  "images/reconstructions.png")
        except Exception as exc:  # noqa: BLE001
            log.warning("could not log reconstructions: %s", exc)
