"""Save and load fitted detectors without pickles.

A saved model is a directory with two files:

* ``model.safetensors``: every tensor (network weights and the input scaler);
* ``config.json``: format and library version, estimator parameters, architecture spec
  and fitted scalars (offset, score standardisation, feature names, history).

Loading parses JSON and safetensors only, so a model file can never run code. The
directory is written to a temporary sibling and renamed into place: a crash leaves either
the old model or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gananomaly._version import __version__

__all__ = ["save", "load", "save_model", "FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "TRUSTED_TYPES"]

FORMAT_NAME = "gananomaly"
FORMAT_VERSION = 4
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_NETS = {"generator_": "generator", "discriminator_": "discriminator", "encoder_": "encoder"}
_UNSAVED_PARAMS = {"callbacks"}
PIPELINE_CONFIG = "pipeline.json"
PREPROCESSING_NAME = "preprocessing.skops"
DETECTOR_DIR = "detector"
# Types (besides scikit-learn's own, which skops trusts) that a saved preprocessing step
# may contain. Loading refuses anything else, so a model file can never run arbitrary code.
TRUSTED_TYPES: list[str] = ["numpy.dtype"]


def _jsonable_params(est) -> dict[str, Any]:
    params = {}
    for key, value in est.get_params(deep=False).items():
        if key in _UNSAVED_PARAMS:
            continue
        if key == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
            value = None  # a RandomState object has no JSON form; the weights are what matter
        if isinstance(value, torch.device):
            value = str(value)
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, np.integer):
            value = int(value)
        if isinstance(value, np.floating):
            value = float(value)
        params[key] = value
    return params


def _check_parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not an existing directory")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not writable")
    return parent


def _atomic_dir(path: Path, write) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``path`` (replacing it)."""
    parent = _check_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        write(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save(obj, path: str | os.PathLike) -> Path:
    """Write a fitted detector, or a fitted scikit-learn ``Pipeline`` whose last step is a
    detector, to the directory ``path`` (replaced atomically if present).

    A pipeline's preprocessing steps are stored with skops (a pickle-free format that
    loads only allow-listed types); the detector as safetensors + JSON.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    from gananomaly.estimator import GANAnomalyDetector

    path = Path(path)
    if isinstance(obj, Pipeline):
        final = obj.steps[-1][1]
        if not isinstance(final, GANAnomalyDetector):
            raise TypeError(f"the last step of the pipeline must be a GANAnomalyDetector, got {type(final).__name__}")
        check_is_fitted(final)

        def write(tmp: Path) -> None:
            import skops.io as sio

            _write_detector(final, tmp / DETECTOR_DIR)
            sio.dump(obj[:-1], tmp / PREPROCESSING_NAME)
            meta = {"format": FORMAT_NAME, "kind": "pipeline", "format_version": FORMAT_VERSION,
                    "library_version": __version__, "detector_step": obj.steps[-1][0]}
            _write_json(tmp / PIPELINE_CONFIG, meta)

        return _atomic_dir(path, write)
    if not isinstance(obj, GANAnomalyDetector):
        raise TypeError(f"can only save a GANAnomalyDetector or a Pipeline ending in one, got {type(obj).__name__}")
    check_is_fitted(obj)
    return _atomic_dir(path, lambda tmp: _write_detector(obj, tmp))


save_model = save


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())


def _write_detector(est, out: Path) -> None:
    out.mkdir(exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    for attr, prefix in _NETS.items():
        for key, value in getattr(est, attr).state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    tensors["input.mean"] = torch.from_numpy(np.ascontiguousarray(est.input_mean_, dtype=np.float64))
    tensors["input.scale"] = torch.from_numpy(np.ascontiguousarray(est.input_scale_, dtype=np.float64))
    sc = est.score_config_
    tensors["score.latent_loc"] = torch.from_numpy(np.ascontiguousarray(sc.latent_loc, dtype=np.float64))
    tensors["score.latent_factor"] = torch.from_numpy(np.ascontiguousarray(sc.latent_factor, dtype=np.float64))
    tensors["score.knn_bank"] = torch.from_numpy(np.ascontiguousarray(sc.knn_bank, dtype=np.float32))
    if sc.map_scale is not None:
        tensors["score.map_scale"] = torch.from_numpy(np.ascontiguousarray(sc.map_scale, dtype=np.float32))
    names = getattr(est, "feature_names_in_", None)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "params": _jsonable_params(est),
        "arch": est.arch_,
        "fitted": {
            "n_features_in_": int(est.n_features_in_),
            "feature_names_in_": None if names is None else [str(n) for n in names],
            "offset_": float(est.offset_),
            "n_epochs_": int(est.n_epochs_),
            "score_config": {
                "joint": sc.joint,
                "n_refine_steps": sc.n_refine_steps,
                "refine_lr": sc.refine_lr,
                "kappa": sc.kappa,
                "loc": sc.loc,
                "scale": sc.scale,
            },
            "extra": getattr(est, "_persist_extra", lambda: {})(),
        },
        "history": est.history_,
    }
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": FORMAT_NAME})
    _write_json(out / CONFIG_NAME, config)


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: {what}")


def _check_format_version(config: dict, path: Path) -> None:
    version = config.get("format_version")
    _require(isinstance(version, int), path, "format_version missing")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"model at {str(path)!r} has format version {version}, newer than this gananomaly "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade gananomaly to load it"
        )


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` of a saved model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no gananomaly model at {str(path)!r}")
    cfg_path = path / CONFIG_NAME
    _require(path.is_dir() and cfg_path.is_file(), path, f"missing {CONFIG_NAME}")
    try:
        with open(cfg_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: corrupt {CONFIG_NAME} ({exc})") from exc
    _require(isinstance(config, dict) and config.get("format") == FORMAT_NAME, path,
             f"{CONFIG_NAME} does not describe a gananomaly model")
    _check_format_version(config, path)
    for key, typ in (("params", dict), ("arch", dict), ("fitted", dict), ("history", dict)):
        _require(isinstance(config.get(key), typ), path, f"{key!r} missing or not a {typ.__name__}")
    fitted = config["fitted"]
    sc = fitted.get("score_config")
    _require(isinstance(sc, dict) and isinstance(sc.get("loc"), dict) and isinstance(sc.get("scale"), dict),
             path, "score_config missing")
    _require(isinstance(fitted.get("n_features_in_"), int) and fitted["n_features_in_"] > 0, path,
             "n_features_in_ missing")
    _require(isinstance(fitted.get("offset_"), (int, float)), path, "offset_ missing")
    return config


def load(path: str | os.PathLike, *, device: str = "auto"):
    """Load a detector saved with :meth:`GANAnomalyDetector.save`.

    Parameters
    ----------
    path : str or path-like
        The model directory.
    device : str, default="auto"
        Where to place the networks (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is not a gananomaly model, is corrupt, or was written by a newer format.
    """
    from gananomaly import data as _data
    from gananomaly import scoring as _scoring
    from gananomaly.estimator import GANAnomalyDetector
    from gananomaly.networks import build_networks

    path = Path(path)
    if (path / PIPELINE_CONFIG).is_file():
        return _load_pipeline(path, device=device)
    config = read_config(path)
    weights_path = path / WEIGHTS_NAME
    _require(weights_path.is_file(), path, f"missing {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: corrupt {WEIGHTS_NAME} ({exc})") from exc

    est = GANAnomalyDetector()
    params = dict(config["params"])
    if isinstance(params.get("hidden_dims"), list):
        params["hidden_dims"] = tuple(params["hidden_dims"])
    unknown = set(params) - set(est.get_params(deep=False))
    _require(not unknown, path, f"unknown parameters {sorted(unknown)}")
    est.set_params(**params)
    try:
        est._validate_params()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: {exc}") from exc

    dev = _data.resolve_device(device)
    try:
        nets = build_networks(config["arch"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: bad architecture ({exc})") from exc
    for (attr, prefix), net in zip(_NETS.items(), nets):
        state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{str(path)!r} is not a valid gananomaly model: {prefix} weights do not match "
                             f"the architecture ({str(exc).splitlines()[0]})") from exc
        net.to(dev).eval()
        setattr(est, attr, net)
    image = config["arch"].get("kind") == "conv"
    # Format 3 differs from 4 only in the image score (4 adds the residual map statistics).
    if config["format_version"] < (FORMAT_VERSION if image else 3):
        lacks = "the image map statistics" if image else "the knn score statistics"
        raise ValueError(f"model at {str(path)!r} has format version {config['format_version']}, written by an "
                         f"older gananomaly that lacks {lacks}; refit it with this version "
                         f"(format {FORMAT_VERSION})")
    if image:
        _require("score.map_scale" in tensors, path, "tensor 'score.map_scale' missing")
    for key in ("input.mean", "input.scale", "score.latent_loc", "score.latent_factor", "score.knn_bank"):
        _require(key in tensors, path, f"tensor {key!r} missing")
    est.input_mean_ = tensors["input.mean"].numpy().astype(np.float64)
    est.input_scale_ = tensors["input.scale"].numpy().astype(np.float64)

    fitted = config["fitted"]
    est.arch_ = config["arch"]
    est.n_features_in_ = fitted["n_features_in_"]
    if fitted.get("feature_names_in_") is not None:
        est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    est.offset_ = float(fitted["offset_"])
    est.n_epochs_ = int(fitted.get("n_epochs_", 0))
    est.history_ = config["history"]
    est.device_ = dev
    sc = fitted["score_config"]
    est.score_config_ = _scoring.ScoreConfig(
        joint=bool(sc["joint"]),
        n_refine_steps=int(sc["n_refine_steps"]),
        refine_lr=float(sc["refine_lr"]),
        kappa=float(sc["kappa"]),
        batch_size=65536 if dev.type == "cuda" else 8192,
        amp_dtype=_data.resolve_precision(est.precision, dev),
        context_dim=int(config["arch"].get("context_dim", 0)),
        loc={k: float(v) for k, v in sc["loc"].items()},
        scale={k: float(v) for k, v in sc["scale"].items()},
        latent_loc=tensors["score.latent_loc"].numpy().astype(np.float64),
        latent_factor=tensors["score.latent_factor"].numpy().astype(np.float64),
        knn_bank=np.ascontiguousarray(tensors["score.knn_bank"].numpy(), dtype=np.float32),
    )
    if image:
        scale = tensors["score.map_scale"].numpy()
        side = int(config["arch"]["size"])
        _require(scale.shape == (2, side, side) and bool(np.isfinite(scale).all()) and bool((scale > 0).all()),
                 path, f"image map statistics must be positive finite numbers of shape (2, {side}, {side})")
        est.score_config_.map_scale = np.ascontiguousarray(scale, dtype=np.float32)
    bank = est.score_config_.knn_bank.shape
    _require(len(bank) == 2 and bank[0] >= 1 and bank[1] == int(getattr(nets[1], "feature_dim", bank[1])),
             path, "knn bank does not match the discriminator's feature size")
    k = est.score_config_.latent_loc.shape
    _require(len(k) == 1 and est.score_config_.latent_factor.shape == (k[0], k[0])
             and k[0] == int(config["arch"].get("latent_dim", -1)), path,
             "latent statistics do not match the latent dimension")
    for name in _scoring.COMPONENTS:
        _require(name in est.score_config_.loc and name in est.score_config_.scale, path,
                 f"score statistics for {name!r} missing")
    if hasattr(est, "_load_extra"):
        est._load_extra(fitted.get("extra") or {})
    return est


def _load_pipeline(path: Path, *, device: str):
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    try:
        with open(path / PIPELINE_CONFIG, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: corrupt {PIPELINE_CONFIG} ({exc})") from exc
    _require(isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and meta.get("kind") == "pipeline",
             path, f"{PIPELINE_CONFIG} does not describe a gananomaly pipeline")
    _check_format_version(meta, path)
    detector = load(path / DETECTOR_DIR, device=device)
    prep_path = path / PREPROCESSING_NAME
    _require(prep_path.is_file(), path, f"missing {PREPROCESSING_NAME}")
    try:
        untrusted = sio.get_untrusted_types(file=prep_path)
    except Exception as exc:  # skops raises assorted errors on corrupt archives
        raise ValueError(f"{str(path)!r} is not a valid gananomaly model: corrupt {PREPROCESSING_NAME} ({exc})") \
            from exc
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ValueError(f"{str(path)!r}: refusing to load {PREPROCESSING_NAME}: it contains types that are not "
                         f"allow-listed: {refused}")
    prep = sio.load(prep_path, trusted=untrusted)
    _require(isinstance(prep, Pipeline), path, f"{PREPROCESSING_NAME} does not hold a Pipeline")
    return Pipeline(list(prep.steps) + [(str(meta.get("detector_step", "detector")), detector)])
