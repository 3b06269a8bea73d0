"""Loading a fitted model for scoring (a model directory, an MLflow model directory or URI)
and fingerprinting it, so a resumed job can tell it scores with the same model."""

from __future__ import annotations

import functools
import hashlib
import types
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_model", "model_fingerprint", "with_threshold"]

def _is_uri(spec: str) -> bool:
    return "://" in spec or spec.startswith(("runs:/", "models:/"))


def model_fingerprint(model) -> str:
    """A stable hex digest of a fitted model: the detector's
    :meth:`~gananomaly.GANAnomalyDetector.fingerprint` (every tensor and value its save writes:
    weights, statistics, the k-NN bank, parameters, offset, threshold) and, for a pipeline, the
    fitted state of every preprocessing step.

    Identical for the same model loaded in different processes (used to check that a
    resumed job scores with the same model).

    Raises
    ------
    ValueError
        The model is not a detector or a pipeline ending in one (a Laplacian-pyramid model is
        scored in Python, not by the jobs).
    """
    from sklearn.pipeline import Pipeline

    from gananomaly.estimator import GANAnomalyDetector

    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if not isinstance(det, GANAnomalyDetector):
        kind = ("a Laplacian-pyramid model" if hasattr(det, "detectors_")
                else f"a {type(det).__name__}")
        raise ValueError(f"--model is {kind}; the scoring jobs take a GANAnomalyDetector or a pipeline ending in "
                         "one (score a pyramid in Python: gananomaly.load(path).score_samples(images))")
    h = hashlib.sha256(det.fingerprint().encode())
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        for name, step in model.steps[:-1]:
            h.update(name.encode())
            _hash_state(step, h, 0)
    return h.hexdigest()


def _hash_state(obj, h, depth: int) -> None:
    """Feed ``obj``'s fitted state into ``h``, the same in every process: arrays by dtype, shape
    and bytes, containers in a fixed order, estimators by class and attributes."""
    if depth > 20:  # a structure that refers to itself: its depth is cut, the same way every time
        h.update(b"<deeper>")
        return
    if isinstance(obj, np.ndarray):
        h.update(f"ndarray:{obj.dtype.str}:{obj.shape}".encode())
        if obj.dtype.hasobject:
            for v in obj.ravel():
                _hash_state(v, h, depth + 1)
        else:
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (str, bytes, int, float, complex, bool, type(None), np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}:{len(obj)}".encode())
        for v in obj:
            _hash_state(v, h, depth + 1)
    elif isinstance(obj, dict):
        h.update(f"dict:{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _hash_state(obj[k], h, depth + 1)
    elif isinstance(obj, (set, frozenset)):
        h.update(f"set:{sorted(map(repr, obj))}".encode())
    elif isinstance(obj, (types.FunctionType, types.MethodType)):
        # a function by what it computes: its code, constants, defaults and closed-over values
        fn = obj.__func__ if isinstance(obj, types.MethodType) else obj
        h.update(f"function:{fn.__module__}.{fn.__qualname__}".encode())
        h.update(fn.__code__.co_code)
        _hash_state([fn.__code__.co_consts, fn.__defaults__, fn.__kwdefaults__,
                     [c.cell_contents for c in fn.__closure__ or ()]], h, depth + 1)
        if isinstance(obj, types.MethodType):
            _hash_state(obj.__self__, h, depth + 1)
    elif isinstance(obj, types.CodeType):
        h.update(f"code:{obj.co_qualname}".encode() + obj.co_code)
        _hash_state(obj.co_consts, h, depth + 1)
    elif isinstance(obj, functools.partial):
        _hash_state([obj.func, obj.args, obj.keywords], h, depth + 1)
    elif isinstance(obj, (np.ufunc, types.BuiltinFunctionType)):
        h.update(f"builtin:{getattr(obj, '__module__', None)}.{obj.__name__}".encode())
    elif callable(obj) and not hasattr(obj, "__dict__"):
        h.update(f"callable:{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".encode())
    elif hasattr(obj, "__dict__"):
        h.update(f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        _hash_state({k: v for k, v in vars(obj).items() if not k.startswith("__")}, h, depth + 1)
    else:
        h.update(f"{type(obj).__qualname__}:{obj!r}".encode())


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
