"""Loading a fitted model for scoring (a model directory, an MLflow model directory or URI)
and fingerprinting it, so a resumed job can tell it scores with the same model."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from gananomaly.explanations import model_schema

__all__ = ["load_model", "model_fingerprint", "with_threshold"]

def _is_uri(spec: str) -> bool:
    return "://" in spec or spec.startswith(("runs:/", "models:/"))


def model_fingerprint(model) -> str:
    """A stable hex digest of a fitted model: the detector's weights, input scaler,
    score statistics and offset, and the preprocessing's output feature names.

    Identical for the same model loaded in different processes (used to check that a
    resumed job scores with the same model).
    """
    from sklearn.pipeline import Pipeline

    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    h = hashlib.sha256()
    for attr in ("generator_", "discriminator_", "encoder_"):
        for key, value in sorted(getattr(det, attr).state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    for arr in (det.input_mean_, det.input_scale_):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    sc = det.score_config_
    h.update(json.dumps({"loc": sc.loc, "scale": sc.scale, "offset": float(det.offset_),
                         "component": det.component, "weight": float(det.weight),
                         "refine": [sc.n_refine_steps, sc.refine_lr, sc.kappa]}, sort_keys=True).encode())
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        with contextlib.suppress(Exception):
            h.update("|".join(map(str, model[:-1].get_feature_names_out())).encode())
        schema = model_schema(model)
        h.update(json.dumps({"numeric": schema.numeric, "categorical": schema.categorical,
                             "categories": {k: sorted(v) for k, v in schema.categories.items()}}).encode())
    return h.hexdigest()


def load_model(spec, *, device: str = "cpu") -> tuple[Any, str]:
    """Load a model for scoring and fingerprint it.

    Parameters
    ----------
    spec : fitted model, path or str
        A fitted detector/pipeline; a directory written by :func:`gananomaly.persistence.save`;
        a local MLflow model directory (with an ``MLmodel`` file); or an MLflow model URI
        (``runs:/<run_id>/model``, ``models:/<name>/<version>``, ``models:/<model_id>``,
        ``s3://...``, ``dbfs:/...``), loaded with the :mod:`gananomaly.mlflow` flavor.
    device : str, default="cpu"

    Returns
    -------
    (model, fingerprint)
    """
    if hasattr(spec, "score_samples"):
        return spec, model_fingerprint(spec)
    text = str(spec)
    path = Path(text)
    if not _is_uri(text):
        if not path.exists():
            raise FileNotFoundError(f"--model: no model at {text!r}")
        if (path / "MLmodel").is_file():
            model = _load_mlflow(str(path.resolve()))
        else:
            import gananomaly

            model = gananomaly.load(path, device=device)
    else:
        model = _load_mlflow(text)
    return model, model_fingerprint(model)


def with_threshold(spec, threshold: dict[str, Any]):
    """The model of ``spec`` (a copy, when it is an object) with ``threshold`` set."""
    import copy

    from sklearn.pipeline import Pipeline

    model = copy.deepcopy(spec) if hasattr(spec, "score_samples") else load_model(spec)[0]
    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if not hasattr(det, "set_threshold"):
        raise ValueError("this model cannot take a threshold at scoring time; refit it with this gananomaly")
    try:
        det.set_threshold(**threshold)
    except AttributeError as exc:  # a model saved without its training scores
        raise ValueError(f"this model was saved without its training scores, so its threshold cannot be moved; "
                         f"refit it with this gananomaly ({exc})") from None
    return model


def _load_mlflow(uri: str):
    try:
        from gananomaly import mlflow as flavor
    except ImportError as exc:  # pragma: no cover - the flavor ships with gananomaly
        raise ValueError(f"--model {uri!r}: loading MLflow models needs gananomaly.mlflow ({exc})") from exc
    try:
        return flavor.load_model(uri)
    except (OSError, ValueError, TypeError):
        raise
    except Exception as exc:  # MlflowException and friends: name the URI
        raise ValueError(f"--model: cannot load MLflow model {uri!r}: {exc}") from exc
