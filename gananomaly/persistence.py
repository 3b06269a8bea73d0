"""Save and load fitted detectors without pickles.

A saved model is a directory with two files:

* ``model.safetensors``: every tensor (network weights, the input scaler, score statistics);
* ``config.json``: format and library version, estimator parameters, architecture spec,
  fitted scalars (offset, score standardisation, feature names, history) and the SHA-256
  of ``model.safetensors``.

Loading parses JSON and safetensors only, so a model file can never run code. It treats the
files as untrusted input and checks them in an order that allocates nothing before it is
known to be sound:

1. ``config.json`` (at most :data:`MAX_CONFIG_BYTES`): the format and its version, then every
   key against a fixed schema (unknown keys, wrong JSON types, booleans or floats where
   integers belong, non-finite numbers, non-positive scales are refused), with bounds on
   every size and step count (:data:`MAX_DIM`, :data:`MAX_LAYERS`, :data:`MAX_REFINE_STEPS`, ...);
2. the architecture is built on PyTorch's ``meta`` device (shapes only, no memory) and its
   parameter count bounded by :data:`MAX_PARAMETERS`; the weights file may be no larger
   than those shapes need;
3. the safetensors header: every tensor's name, dtype and shape against the architecture
   (feature count, latent size, image channels and side, discriminator feature size);
4. the tensors: finite, scales positive; then the file's SHA-256 against ``config.json``
   (format 4; format 3 table models, written before the digest, load without it);
5. only then are the networks built and filled.

Every refusal is a :class:`ValueError` (or :class:`FileNotFoundError`) naming the model
directory and the key or tensor at fault.

Saving writes the directory under a unique temporary name next to ``path`` and moves it into
place; what would not load back is refused before anything is moved. An existing ``path``
is replaced only if it is an empty directory or a gananomaly model: anything else is refused.
On Linux (``renameat2`` with ``RENAME_EXCHANGE``) the new directory and the old one swap
places in one step, so a reader always finds a whole model at ``path``, old or new. Elsewhere
the old directory is moved aside first: a reader arriving in the moment between the two
renames finds nothing there (``FileNotFoundError``). Concurrent saves to one path all
succeed and the last one to swap wins. A load that overlaps a save and reads files of two
different saves (a checksum or shape mismatch while the directory at ``path`` changed
under it) reads again.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _dump_safetensors

from gananomaly._version import __version__

__all__ = ["save", "load", "save_model", "read_config", "recorded_digest", "FORMAT_VERSION", "CONFIG_NAME",
           "WEIGHTS_NAME", "TRUSTED_TYPES", "DIGEST_KEY", "MAX_PARAMETERS", "MAX_REFINE_STEPS"]

FORMAT_NAME = "gananomaly"
FORMAT_VERSION = 4
# Table models of format 3 differ from format 4 only in lacking the weights digest; image
# models need format 4 (the residual map statistics).
OLDEST_TABLE_FORMAT = 3
OLDEST_IMAGE_FORMAT = 4
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIGEST_KEY = "weights_sha256"
PIPELINE_CONFIG = "pipeline.json"
PREPROCESSING_NAME = "preprocessing.skops"
PREPROCESSING_DIGEST_KEY = "preprocessing_sha256"
DETECTOR_DIR = "detector"
_NETS = {"generator_": "generator", "discriminator_": "discriminator", "encoder_": "encoder"}
_UNSAVED_PARAMS = {"callbacks"}
# Types (besides scikit-learn's own, which skops trusts) that a saved preprocessing step
# may contain. Loading refuses anything else, so a model file can never run arbitrary code.
TRUSTED_TYPES: list[str] = ["numpy.dtype"]

# Bounds on what a model file may ask for. They are far above any model this library
# trains (its widest default layer has 256 units) and low enough that a few-KB config can
# neither exhaust memory nor make scoring run for days.
MAX_CONFIG_BYTES = 64 * 2**20
MAX_PREPROCESSING_BYTES = 256 * 2**20
MAX_HEADER_BYTES = 16 * 2**20
MAX_PARAMETERS = 2**28  # all three networks together: 1 GiB of float32
MAX_DIM = 2**20  # any one width, latent size or feature count
MAX_FEATURES = 2**31
MAX_LAYERS = 32
MAX_IMAGE_SIDE = 4096
MAX_REFINE_STEPS = 10_000
MAX_HISTORY_VALUES = 10_000_000
MAX_STRING = 4096
_READ_ATTEMPTS = 3

_TOP_KEYS = {"format", "format_version", "library_version", "params", "arch", "fitted", "history", DIGEST_KEY}
_MLP_KEYS = {"kind", "n_features", "latent_dim", "hidden_dims", "joint", "spectral_norm", "dropout"}
_CONV_KEYS = {"kind", "channels", "size", "latent_dim", "width", "joint", "spectral_norm", "dropout"}
_FITTED_REQUIRED = {"n_features_in_", "offset_", "score_config"}
_FITTED_OPTIONAL = {"feature_names_in_", "n_epochs_", "extra", "threshold_"}
_SCORE_KEYS = {"joint", "n_refine_steps", "refine_lr", "kappa", "loc", "scale"}
_EXTRA_KEYS = {"image_shape", "objective", "fidelity", "context_categories", "context_mean", "context_scale"}
_PIPELINE_KEYS = {"format", "kind", "format_version", "library_version", "detector_step", PREPROCESSING_DIGEST_KEY}
# Estimator parameters that may be booleans (the others never are: True is not an epoch count).
_BOOL_PARAMS = {"early_stopping", "verbose"}
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


# ---------------------------------------------------------------------------------- saving


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
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        params[key] = value
    return params


def _check_parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not an existing directory")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not writable")
    return parent


def _is_model_dir(path: Path) -> bool:
    """Whether the directory ``path`` holds a gananomaly model (detector or pipeline) and
    nothing else: the only kind of directory :func:`save` replaces."""
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    for layout, marker in (({CONFIG_NAME, WEIGHTS_NAME}, CONFIG_NAME),
                           ({PIPELINE_CONFIG, PREPROCESSING_NAME, DETECTOR_DIR}, PIPELINE_CONFIG)):
        if marker in entries and entries <= layout:
            try:
                with open(path / marker, "rb") as fh:
                    doc = json.loads(fh.read(MAX_CONFIG_BYTES))
            except (OSError, ValueError, RecursionError):
                return False
            return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME
    return False


def _check_replaceable(path: Path) -> None:
    if path.is_symlink():
        raise ValueError(f"cannot save model to {str(path)!r}: it is a symbolic link; save to the directory "
                         f"it points to, or remove the link")
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"cannot save model to {str(path)!r}: a file of that name exists and is not a gananomaly "
                         f"model; remove it or choose another path")
    if any(True for _ in os.scandir(path)) and not _is_model_dir(path):
        raise ValueError(f"cannot save model to {str(path)!r}: that directory exists and is not a gananomaly "
                         f"model; refusing to replace it (remove it or choose another path)")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one step; False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # a file system (or kernel) without the exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _install(tmp: Path, path: Path, parent: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing a model there. Another
    process saving to the same path at the same time may win any step: retry until ours is in."""
    for _ in range(1000):
        try:
            os.rename(tmp, path)  # nothing (or an empty directory) at path: atomic
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        _check_replaceable(path)
        try:
            if _exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous model
                return
        except FileNotFoundError:
            continue  # another save moved the old model aside meanwhile
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
        os.rmdir(old)
        try:
            os.rename(path, old)
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"cannot save model to {str(path)!r}: other processes kept replacing it")


def _atomic_dir(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``path`` (replacing a model there)."""
    parent = _check_parent(path)
    _check_replaceable(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    try:
        write(tmp)
        _install(tmp, path, parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def save(obj, path: str | os.PathLike) -> Path:
    """Write a fitted detector, or a fitted scikit-learn ``Pipeline`` whose last step is a
    detector, to the directory ``path``.

    A pipeline's preprocessing steps are stored with skops (a pickle-free format that
    loads only allow-listed types); the detector as safetensors + JSON.

    Raises
    ------
    ValueError
        ``path`` exists and is neither an empty directory nor a gananomaly model (it is
        never replaced), its parent directory does not exist, or the model would not load
        back (for instance a size beyond :data:`MAX_PARAMETERS`).
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

            _write_detector(final, tmp / DETECTOR_DIR, path)
            prep = sio.dumps(obj[:-1])
            _write_bytes(tmp / PREPROCESSING_NAME, prep)
            meta = {"format": FORMAT_NAME, "kind": "pipeline", "format_version": FORMAT_VERSION,
                    "library_version": __version__, "detector_step": obj.steps[-1][0],
                    PREPROCESSING_DIGEST_KEY: hashlib.sha256(prep).hexdigest()}
            _check_pipeline_meta(meta, path)
            _write_bytes(tmp / PIPELINE_CONFIG, json.dumps(meta, indent=2).encode())

        return _atomic_dir(path, write)
    if not isinstance(obj, GANAnomalyDetector):
        raise TypeError(f"can only save a GANAnomalyDetector or a Pipeline ending in one, got {type(obj).__name__}")
    check_is_fitted(obj)
    return _atomic_dir(path, lambda tmp: _write_detector(obj, tmp, path))


save_model = save


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_detector(est, out: Path, final: Path) -> None:
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
    components = getattr(est, "training_components_", None)
    if components is not None:
        tensors["score.train_components"] = torch.from_numpy(np.ascontiguousarray(components, dtype=np.float64))
    if sc.map_scale is not None:
        tensors["score.map_scale"] = torch.from_numpy(np.ascontiguousarray(sc.map_scale, dtype=np.float32))
    names = getattr(est, "feature_names_in_", None)
    weights = _dump_safetensors(tensors, metadata={"format": FORMAT_NAME})
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        DIGEST_KEY: hashlib.sha256(weights).hexdigest(),
        "params": _jsonable_params(est),
        "arch": est.arch_,
        "fitted": {
            "n_features_in_": int(est.n_features_in_),
            "feature_names_in_": None if names is None else [str(n) for n in names],
            "offset_": float(est.offset_),
            "threshold_": getattr(est, "threshold_", None),
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
    text = json.dumps(config, indent=2)
    # What would not load back is not written: the same checks as load, before anything moves.
    try:
        checked = _check_config(json.loads(text), final)
        _check_weights(weights, checked, final)
    except ValueError as exc:
        raise ValueError(f"cannot save model to {str(final)!r}: it would not load back ({exc})") from exc
    _write_bytes(out / WEIGHTS_NAME, weights)
    _write_bytes(out / CONFIG_NAME, text.encode())


# ------------------------------------------------------------------------- checking a config


class _Invalid:
    """Raises the refusal for one file of one model, naming the key at fault."""

    def __init__(self, model: Path, file: str):
        self.model, self.file = model, file

    def __call__(self, key: str, what: str) -> NoReturn:
        noun = "tensor" if self.file == WEIGHTS_NAME else "key"
        where = f"{self.file} {noun} {key!r}" if key else self.file
        raise ValueError(f"{str(self.model)!r} is not a valid gananomaly model: {where} {what}")

    def corrupt(self, detail: str) -> NoReturn:
        raise ValueError(f"{str(self.model)!r} is not a valid gananomaly model: corrupt {self.file} ({detail})")

    def keys(self, obj: Any, key: str, required: set[str], optional: set[str] = frozenset()) -> dict:
        if not isinstance(obj, dict):
            self(key, f"must be a JSON object, got {_kind(obj)}")
        missing = sorted(required - set(obj))
        if missing:
            self(_join(key, missing[0]), "is missing")
        unknown = sorted(set(obj) - required - set(optional), key=str)
        if unknown:
            self(_join(key, str(unknown[0])), "is not a known key")
        return obj

    def int(self, value: Any, key: str, lo: int, hi: int) -> int:
        if type(value) is not int:
            self(key, f"must be an integer, got {_kind(value)} {_short(value)}")
        if not lo <= value <= hi:
            self(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, value: Any, key: str, *, lo: float = -math.inf, positive: bool = False,
               hi: float = math.inf, finite: bool = True) -> float:
        if type(value) not in (int, float):
            self(key, f"must be a number, got {_kind(value)} {_short(value)}")
        value = float(value)
        if finite and not math.isfinite(value):
            self(key, f"must be a finite number, got {value}")
        if positive and not value > 0:
            self(key, f"must be positive, got {value}")
        if not lo <= value <= hi:
            self(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def bool(self, value: Any, key: str) -> bool:
        if type(value) is not bool:
            self(key, f"must be true or false, got {_kind(value)} {_short(value)}")
        return value

    def str(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if type(value) is not str:
            self(key, f"must be a string, got {_kind(value)} {_short(value)}")
        if len(value) > MAX_STRING:
            self(key, f"is longer than {MAX_STRING} characters")
        if choices is not None and value not in choices:
            self(key, f"must be one of {list(choices)}, got {_short(value)}")
        return value

    def list(self, value: Any, key: str, lo: int, hi: int) -> list:
        if type(value) is not list:
            self(key, f"must be a list, got {_kind(value)} {_short(value)}")
        if not lo <= len(value) <= hi:
            self(key, f"must have between {lo} and {hi} entries, got {len(value)}")
        return value


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_json(data: bytes, invalid: _Invalid) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        invalid.corrupt("nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        invalid.corrupt(str(exc)[:200])


def _read_limited(path: Path, limit: int, invalid: _Invalid) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        invalid("", "is missing")
    except IsADirectoryError:
        invalid("", "is a directory, not a file")
    if len(data) > limit:
        invalid("", f"is larger than {limit} bytes")
    return data


def _check_format_version(doc: dict, invalid: _Invalid, path: Path) -> int:
    version = doc.get("format_version")
    if version is None:
        invalid("format_version", "is missing")
    if type(version) is not int:
        invalid("format_version", f"must be an integer, got {_kind(version)} {_short(version)}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"model at {str(path)!r} has format version {version}, newer than this gananomaly "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade gananomaly to load it"
        )
    if version < 1:
        invalid("format_version", f"must be a positive integer, got {version}")
    return version


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model (schema, types, bounds).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        The config is missing, corrupt or invalid; the message names the key.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no gananomaly model at {str(path)!r}")
    invalid = _Invalid(path, CONFIG_NAME)
    if not path.is_dir():
        invalid("", "is missing (the path is a file, not a model directory)")
    if not (path / CONFIG_NAME).exists():
        invalid("", "is missing")
    doc = _parse_json(_read_limited(path / CONFIG_NAME, MAX_CONFIG_BYTES, invalid), invalid)
    return _check_config(doc, path)


def _check_config(doc: Any, path: Path) -> dict[str, Any]:
    """The checks of :func:`read_config` on the parsed document."""
    invalid = _Invalid(path, CONFIG_NAME)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        invalid("", "does not describe a gananomaly model")
    version = _check_format_version(doc, invalid, path)
    invalid.keys(doc, "", _TOP_KEYS - {DIGEST_KEY}, {DIGEST_KEY})
    invalid.str(doc["library_version"], "library_version")
    arch = _check_arch(doc["arch"], invalid)
    image = arch["kind"] == "conv"
    oldest = OLDEST_IMAGE_FORMAT if image else OLDEST_TABLE_FORMAT
    if version < oldest:
        lacks = "the image map statistics" if image else "the knn score statistics"
        raise ValueError(f"model at {str(path)!r} has format version {version}, written by an older gananomaly "
                         f"that lacks {lacks}; refit it with this version (format {FORMAT_VERSION})")
    if DIGEST_KEY in doc or version >= 4:
        if DIGEST_KEY not in doc:
            invalid(DIGEST_KEY, f"is missing (format {version} models record the SHA-256 of {WEIGHTS_NAME}); "
                                f"save the model again with this gananomaly")
        digest = invalid.str(doc[DIGEST_KEY], DIGEST_KEY)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            invalid(DIGEST_KEY, "must be 64 lowercase hexadecimal digits")
    _check_params(doc["params"], invalid)
    _check_fitted(doc["fitted"], arch, invalid)
    _check_history(doc["history"], invalid)
    return doc


def _check_arch(arch: Any, invalid: _Invalid) -> dict:
    if not isinstance(arch, dict):
        invalid("arch", f"must be a JSON object, got {_kind(arch)}")
    kind = arch.get("kind")
    if kind == "mlp":
        invalid.keys(arch, "arch", _MLP_KEYS, {"context_dim"})
        invalid.int(arch["n_features"], "arch.n_features", 1, MAX_DIM)
        invalid.int(arch.get("context_dim", 0), "arch.context_dim", 0, MAX_DIM)
        hidden = invalid.list(arch["hidden_dims"], "arch.hidden_dims", 1, MAX_LAYERS)
        for i, h in enumerate(hidden):
            invalid.int(h, f"arch.hidden_dims[{i}]", 1, MAX_DIM)
    elif kind == "conv":
        invalid.keys(arch, "arch", _CONV_KEYS)
        invalid.int(arch["channels"], "arch.channels", 1, 3)
        if arch["channels"] == 2:
            invalid("arch.channels", "must be 1 (grey) or 3 (RGB), got 2")
        size = invalid.int(arch["size"], "arch.size", 8, MAX_IMAGE_SIDE)
        if size & (size - 1):
            invalid("arch.size", f"must be a power of two, got {size}")
        invalid.int(arch["width"], "arch.width", 1, MAX_DIM)
    else:
        invalid("arch.kind", f"must be 'mlp' or 'conv', got {_short(kind)}")
    invalid.int(arch["latent_dim"], "arch.latent_dim", 1, MAX_DIM)
    invalid.bool(arch["joint"], "arch.joint")
    invalid.bool(arch["spectral_norm"], "arch.spectral_norm")
    invalid.number(arch["dropout"], "arch.dropout", lo=0.0, hi=0.999)
    return arch


def _check_params(params: Any, invalid: _Invalid) -> None:
    from gananomaly.estimator import GANAnomalyDetector

    known = set(GANAnomalyDetector().get_params(deep=False)) - _UNSAVED_PARAMS
    invalid.keys(params, "params", set(), known)
    for key, value in params.items():
        name = f"params.{key}"
        if isinstance(value, bool) and key not in _BOOL_PARAMS:
            invalid(name, f"must not be a boolean, got {value}")
        if isinstance(value, float) and not math.isfinite(value):
            invalid(name, f"must be a finite number, got {value}")
        if isinstance(value, str):
            invalid.str(value, name)
        if isinstance(value, dict):
            invalid(name, "must not be a JSON object")
        if isinstance(value, list):
            if key != "hidden_dims":
                invalid(name, "must not be a list")
            for i, h in enumerate(invalid.list(value, name, 1, MAX_LAYERS)):
                invalid.int(h, f"{name}[{i}]", 1, MAX_DIM)
    if type(params.get("n_refine_steps")) is int:
        invalid.int(params["n_refine_steps"], "params.n_refine_steps", 0, MAX_REFINE_STEPS)
    est = GANAnomalyDetector()
    values = dict(params)
    if isinstance(values.get("hidden_dims"), list):
        values["hidden_dims"] = tuple(values["hidden_dims"])
    est.set_params(**values)
    try:
        est._validate_params()
    except (ValueError, TypeError) as exc:
        invalid("params", f"is invalid: {exc}")


def _check_fitted(fitted: Any, arch: dict, invalid: _Invalid) -> None:
    from gananomaly.scoring import COMPONENTS

    invalid.keys(fitted, "fitted", _FITTED_REQUIRED, _FITTED_OPTIONAL)
    n = invalid.int(fitted["n_features_in_"], "fitted.n_features_in_", 1, MAX_FEATURES)
    if arch["kind"] == "mlp" and n != arch["n_features"]:
        invalid("fitted.n_features_in_", f"must equal arch.n_features ({arch['n_features']}), got {n}")
    names = fitted.get("feature_names_in_")
    if names is not None:
        invalid.list(names, "fitted.feature_names_in_", n, n)
        for i, name in enumerate(names):
            invalid.str(name, f"fitted.feature_names_in_[{i}]")
        if len(set(names)) != len(names):
            invalid("fitted.feature_names_in_", "must not repeat a name")
    invalid.number(fitted["offset_"], "fitted.offset_")
    threshold = fitted.get("threshold_")
    if threshold is not None:
        invalid.keys(threshold, "fitted.threshold_", set(), {"contamination", "score"})
        if len(threshold) != 1:
            invalid("fitted.threshold_", "must hold exactly one of contamination, score")
        if "score" in threshold:
            invalid.number(threshold["score"], "fitted.threshold_.score")
        elif threshold["contamination"] != "auto":
            invalid.number(threshold["contamination"], "fitted.threshold_.contamination", lo=0.0, hi=0.5,
                           positive=True)
    if "n_epochs_" in fitted:
        invalid.int(fitted["n_epochs_"], "fitted.n_epochs_", 0, 2**31)
    sc = invalid.keys(fitted["score_config"], "fitted.score_config", _SCORE_KEYS)
    if invalid.bool(sc["joint"], "fitted.score_config.joint") != arch["joint"]:
        invalid("fitted.score_config.joint", f"must equal arch.joint ({arch['joint']})")
    invalid.int(sc["n_refine_steps"], "fitted.score_config.n_refine_steps", 0, MAX_REFINE_STEPS)
    invalid.number(sc["refine_lr"], "fitted.score_config.refine_lr", positive=True)
    invalid.number(sc["kappa"], "fitted.score_config.kappa", lo=0.0)
    for part, positive in (("loc", False), ("scale", True)):
        key = f"fitted.score_config.{part}"
        stats = invalid.keys(sc[part], key, set(COMPONENTS))
        for name in COMPONENTS:
            invalid.number(stats[name], f"{key}.{name}", positive=positive)
    _check_extra(fitted.get("extra", {}), arch, n, invalid)


def _check_extra(extra: Any, arch: dict, n_features: int, invalid: _Invalid) -> None:
    invalid.keys(extra, "fitted.extra", set(), _EXTRA_KEYS)
    if "objective" in extra:
        invalid.str(extra["objective"], "fitted.extra.objective", ("gan", "wgan-gp"))
    fidelity = extra.get("fidelity", {})
    if not isinstance(fidelity, dict):
        invalid("fitted.extra.fidelity", f"must be a JSON object, got {_kind(fidelity)}")
    if len(fidelity) > 32:
        invalid("fitted.extra.fidelity", "must have at most 32 entries")
    for key, value in fidelity.items():
        invalid.str(key, "fitted.extra.fidelity")
        invalid.number(value, f"fitted.extra.fidelity.{key}", finite=False)  # a report, not used to score
    shape = extra.get("image_shape")
    if shape is not None:
        invalid.list(shape, "fitted.extra.image_shape", 3, 3)
        for i, v in enumerate(shape):
            invalid.int(v, f"fitted.extra.image_shape[{i}]", 1, MAX_FEATURES)
        if shape[0] not in (1, 3):
            invalid("fitted.extra.image_shape", f"must have 1 or 3 channels first, got {shape}")
        if shape[0] * shape[1] * shape[2] != n_features:
            invalid("fitted.extra.image_shape", f"must hold fitted.n_features_in_ ({n_features}) values, got {shape}")
    if arch["kind"] == "conv":
        if shape is None:
            invalid("fitted.extra.image_shape", "is missing (an image model records its image shape)")
        if shape[0] != arch["channels"]:
            invalid("fitted.extra.image_shape", f"must have arch.channels ({arch['channels']}) channels, got {shape}")
    context_dim = arch.get("context_dim", 0)
    cats, mean, scale = extra.get("context_categories"), extra.get("context_mean"), extra.get("context_scale")
    if (mean is None) != (scale is None):
        invalid("fitted.extra.context_scale" if scale is None else "fitted.extra.context_mean",
                "is missing (context_mean and context_scale come together)")
    if cats is not None and mean is not None:
        invalid("fitted.extra.context_categories", "and context_mean exclude each other")
    if context_dim and cats is None and mean is None:
        invalid("fitted.extra.context_categories", f"is missing (arch.context_dim is {context_dim})")
    if cats is not None:
        invalid.list(cats, "fitted.extra.context_categories", context_dim, context_dim)
        for i, c in enumerate(cats):
            invalid.str(c, f"fitted.extra.context_categories[{i}]")
        if context_dim == 0 or len(set(cats)) != len(cats):
            invalid("fitted.extra.context_categories", "must be distinct strings, one per arch.context_dim")
    if mean is not None:
        for part, values, positive in (("context_mean", mean, False), ("context_scale", scale, True)):
            invalid.list(values, f"fitted.extra.{part}", context_dim, context_dim)
            if context_dim == 0:
                invalid(f"fitted.extra.{part}", "needs arch.context_dim > 0")
            for i, v in enumerate(values):
                invalid.number(v, f"fitted.extra.{part}[{i}]", positive=positive)


def _check_history(history: Any, invalid: _Invalid) -> None:
    if not isinstance(history, dict):
        invalid("history", f"must be a JSON object, got {_kind(history)}")
    total = 0
    for key, values in history.items():
        name = f"history.{key}"
        invalid.str(key, "history")
        invalid.list(values, name, 0, MAX_HISTORY_VALUES)
        total += len(values)
        for i, v in enumerate(values):
            if v is not None:
                invalid.number(v, f"{name}[{i}]", finite=False)  # a record of training, not used to score
    if total > MAX_HISTORY_VALUES:
        invalid("history", f"has more than {MAX_HISTORY_VALUES} values")


# ------------------------------------------------------------------------ checking weights


class _Expected:
    """The tensors an architecture needs: name -> (dtype, shape, description)."""

    def __init__(self, config: dict, path: Path):
        from gananomaly.networks import build_networks
        from gananomaly.scoring import COMPONENTS, KNN_BANK_ROWS, TRAIN_SCORE_ROWS

        arch = config["arch"]
        invalid = _Invalid(path, CONFIG_NAME)
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated
                nets = build_networks(arch)
        except Exception as exc:  # noqa: BLE001 - any failure means the spec describes no network
            invalid("arch", f"does not describe networks this gananomaly builds ({str(exc)[:200]})")
        self.tensors: dict[str, tuple[str, tuple[int | None, ...], str]] = {}
        n_params = 0
        for net, prefix in zip(nets, _NETS.values()):
            for key, t in net.state_dict().items():
                self.tensors[f"{prefix}.{key}"] = (_DTYPES.get(t.dtype, str(t.dtype)), tuple(t.shape),
                                                   f"{prefix} weights")
                n_params += t.numel()
        if n_params > MAX_PARAMETERS:
            invalid("arch", f"describes networks of {n_params} parameters, more than the {MAX_PARAMETERS} "
                            f"a model may have")
        self.feature_dim = int(nets[1].feature_dim)
        n_in = arch["channels"] if arch["kind"] == "conv" else config["fitted"]["n_features_in_"]
        k = arch["latent_dim"]
        self.tensors.update({
            "input.mean": ("F64", (n_in,), "the input scaler"),
            "input.scale": ("F64", (n_in,), "the input scaler"),
            "score.latent_loc": ("F64", (k,), "the latent statistics"),
            "score.latent_factor": ("F64", (k, k), "the latent statistics"),
            "score.knn_bank": ("F32", (None, self.feature_dim), "the knn bank"),
        })
        if arch["kind"] == "conv":
            side = arch["size"]
            self.tensors["score.map_scale"] = ("F32", (2, side, side), "the image map statistics")
        self.max_rows = KNN_BANK_ROWS
        self.max_bytes = 8 + MAX_HEADER_BYTES + sum(
            _nbytes(dtype, shape, self.max_rows) for dtype, shape, _ in self.tensors.values())
        # Optional (format-3 models and models saved before it existed lack it).
        self.optional = {"score.train_components": ("F64", (None, len(COMPONENTS)), "the training scores")}
        self.max_train_rows = TRAIN_SCORE_ROWS
        self.max_bytes += _nbytes("F64", (TRAIN_SCORE_ROWS, len(COMPONENTS)), TRAIN_SCORE_ROWS)


def _nbytes(dtype: str, shape: tuple[int | None, ...], rows: int) -> int:
    size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2}.get(dtype, 1)
    return size * math.prod(rows if s is None else s for s in shape)


def _read_header(data: bytes, invalid: _Invalid) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Names, dtypes and shapes from a safetensors header, without reading any tensor."""
    if len(data) < 8:
        invalid.corrupt("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(len(data) - 8, MAX_HEADER_BYTES):
        invalid.corrupt(f"a header of {n} bytes in a file of {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n])
    except RecursionError:
        invalid.corrupt("a header nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        invalid.corrupt(f"unreadable header: {str(exc)[:200]}")
    if not isinstance(header, dict):
        invalid.corrupt("the header is not a JSON object")
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list)
                and all(type(s) is int and s >= 0 for s in entry["shape"])):
            invalid(name, "is corrupt (a header entry without a dtype and shape)")
        out[name] = (entry["dtype"], tuple(entry["shape"]))
    return out


def _check_weights(data: bytes, config: dict, path: Path,
                   expected: _Expected | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``data`` once header, values and digest have passed."""
    invalid = _Invalid(path, WEIGHTS_NAME)
    expected = expected or _Expected(config, path)
    if len(data) > expected.max_bytes:
        invalid("", f"is {len(data)} bytes, more than this architecture's tensors need ({expected.max_bytes})")
    header = _read_header(data, invalid)
    for name, (dtype, shape, what) in expected.tensors.items():
        if name not in header:
            invalid(name, f"({what}) is missing")
        got_dtype, got_shape = header[name]
        if got_dtype != dtype:
            invalid(name, f"({what}) has dtype {got_dtype}, expected {dtype}")
        if len(got_shape) != len(shape) or any(s is not None and g != s for g, s in zip(got_shape, shape)):
            want = "(" + ", ".join("rows" if s is None else str(s) for s in shape) + ")"
            invalid(name, f"({what}) has shape {got_shape}, expected {want} for this architecture")
    rows = header["score.knn_bank"][1][0]
    if not 1 <= rows <= expected.max_rows:
        invalid("score.knn_bank", f"(the knn bank) must have between 1 and {expected.max_rows} rows, got {rows}")
    for name, (dtype, shape, what) in expected.optional.items():
        if name in header:
            got_dtype, got_shape = header[name]
            if got_dtype != dtype or len(got_shape) != 2 or got_shape[1] != shape[1] \
                    or not 1 <= got_shape[0] <= expected.max_train_rows:
                invalid(name, f"({what}) must be {dtype} of shape (1 to {expected.max_train_rows} rows, "
                              f"{shape[1]}), got {got_dtype} {got_shape}")
    unknown = sorted(set(header) - set(expected.tensors) - set(expected.optional))
    if unknown:
        invalid(unknown[0], "is not a tensor of this architecture")
    try:
        tensors = _load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        invalid.corrupt(str(exc)[:200])
    for name, t in tensors.items():
        what = (expected.tensors.get(name) or expected.optional[name])[2]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            invalid(name, f"({what}) holds non-finite values")
    for name in ("input.scale", "score.map_scale"):
        if name in tensors and not bool((tensors[name] > 0).all()):
            invalid(name, f"({expected.tensors[name][2]}) must be positive")
    for name, t in tensors.items():
        if name.endswith("running_var") and not bool((t >= 0).all()):
            invalid(name, "(a batch-norm variance) must not be negative")
    recorded = config.get(DIGEST_KEY)
    if recorded is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != recorded:
            invalid("", f"checksum mismatch: {CONFIG_NAME} records SHA-256 {recorded[:16]}..., the file has "
                        f"{actual[:16]}...; the file was damaged or changed after saving")
    return tensors


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The SHA-256 of the weights that the model at ``path`` records (a pipeline's detector's
    for a pipeline); None for a format-3 model, which records none."""
    path = Path(path)
    if (path / PIPELINE_CONFIG).is_file():
        path = path / DETECTOR_DIR
    return read_config(path).get(DIGEST_KEY)


# --------------------------------------------------------------------------------- loading


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
        ``path`` is not a gananomaly model, is damaged (checksum mismatch), invalid (the
        message names the key or tensor), or was written by a newer format.
    """
    path = Path(path)
    for attempt in range(_READ_ATTEMPTS):
        before = _identity(path)
        try:
            return _load_once(path, device)
        except (ValueError, FileNotFoundError):
            after = _identity(path)
            if attempt + 1 == _READ_ATTEMPTS or after == before:
                raise
            # The directory at path was replaced while it was read (a concurrent save):
            # what was read may mix two models, so read the new one.
            if after is None:
                time.sleep(0.05)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _load_once(path: Path, device: str):
    from gananomaly import data as _data
    from gananomaly import scoring as _scoring
    from gananomaly.estimator import GANAnomalyDetector
    from gananomaly.networks import build_networks

    if (path / PIPELINE_CONFIG).is_file():
        return _load_pipeline(path, device=device)
    config = read_config(path)
    invalid = _Invalid(path, WEIGHTS_NAME)
    if not (path / WEIGHTS_NAME).exists():
        invalid("", "is missing")
    expected = _Expected(config, path)
    tensors = _check_weights(_read_limited(path / WEIGHTS_NAME, expected.max_bytes, invalid), config, path, expected)

    est = GANAnomalyDetector()
    params = dict(config["params"])
    if isinstance(params.get("hidden_dims"), list):
        params["hidden_dims"] = tuple(params["hidden_dims"])
    est.set_params(**params)
    dev = _data.resolve_device(device)
    arch = config["arch"]
    for (attr, prefix), net in zip(_NETS.items(), build_networks(arch)):
        state = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # the header check makes this unreachable; kept as a guard
            invalid(prefix, f"weights do not match the architecture ({str(exc).splitlines()[0]})")
        net.to(dev).eval()
        setattr(est, attr, net)
    est.input_mean_ = tensors["input.mean"].numpy().astype(np.float64)
    est.input_scale_ = tensors["input.scale"].numpy().astype(np.float64)

    fitted = config["fitted"]
    est.arch_ = arch
    est.n_features_in_ = fitted["n_features_in_"]
    if fitted.get("feature_names_in_") is not None:
        est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    est.n_epochs_ = int(fitted.get("n_epochs_", 0))
    est.history_ = config["history"]
    est.device_ = dev
    sc = fitted["score_config"]
    est.score_config_ = _scoring.ScoreConfig(
        joint=sc["joint"],
        n_refine_steps=sc["n_refine_steps"],
        refine_lr=float(sc["refine_lr"]),
        kappa=float(sc["kappa"]),
        batch_size=65536 if dev.type == "cuda" else 8192,
        amp_dtype=_data.resolve_precision(est.precision, dev),
        context_dim=int(arch.get("context_dim", 0)),
        loc={k: float(v) for k, v in sc["loc"].items()},
        scale={k: float(v) for k, v in sc["scale"].items()},
        latent_loc=tensors["score.latent_loc"].numpy().astype(np.float64),
        latent_factor=tensors["score.latent_factor"].numpy().astype(np.float64),
        knn_bank=np.ascontiguousarray(tensors["score.knn_bank"].numpy(), dtype=np.float32),
    )
    if "score.map_scale" in tensors:
        est.score_config_.map_scale = np.ascontiguousarray(tensors["score.map_scale"].numpy(), dtype=np.float32)
    if hasattr(est, "_load_extra"):
        try:
            est._load_extra(fitted.get("extra") or {})
        except ValueError as exc:
            _Invalid(path, CONFIG_NAME)("fitted.extra", f"is invalid ({exc})")
    if "score.train_components" in tensors:
        # the threshold is read from the training scores, as after the fit; the recorded
        # offset_ must agree with them
        est.training_components_ = tensors["score.train_components"].numpy().astype(np.float64)
        est.threshold_ = fitted.get("threshold_")
        recorded, derived = float(fitted["offset_"]), float(est.offset_)
        if not abs(recorded - derived) <= 1e-9 * max(1.0, abs(recorded)):
            _Invalid(path, CONFIG_NAME)("fitted.offset_", f"({recorded!r}) does not match the threshold the "
                                                          f"stored training scores give ({derived!r})")
    else:
        est.offset_ = float(fitted["offset_"])
    return est


def _check_pipeline_meta(meta: Any, path: Path) -> dict:
    invalid = _Invalid(path, PIPELINE_CONFIG)
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and meta.get("kind") == "pipeline"):
        invalid("", "does not describe a gananomaly pipeline")
    version = _check_format_version(meta, invalid, path)
    required = _PIPELINE_KEYS - {PREPROCESSING_DIGEST_KEY}
    if version >= 4 and PREPROCESSING_DIGEST_KEY not in meta:
        invalid(PREPROCESSING_DIGEST_KEY, f"is missing (format {version} pipelines record the SHA-256 of "
                                          f"{PREPROCESSING_NAME}); save the pipeline again with this gananomaly")
    invalid.keys(meta, "", required, {PREPROCESSING_DIGEST_KEY})
    invalid.str(meta["library_version"], "library_version")
    step = invalid.str(meta["detector_step"], "detector_step")
    if not step or "__" in step:
        invalid("detector_step", f"must be a non-empty step name without '__', got {_short(step)}")
    if PREPROCESSING_DIGEST_KEY in meta:
        digest = invalid.str(meta[PREPROCESSING_DIGEST_KEY], PREPROCESSING_DIGEST_KEY)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            invalid(PREPROCESSING_DIGEST_KEY, "must be 64 lowercase hexadecimal digits")
    return meta


def _load_pipeline(path: Path, *, device: str):
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    invalid = _Invalid(path, PIPELINE_CONFIG)
    meta = _check_pipeline_meta(_parse_json(_read_limited(path / PIPELINE_CONFIG, MAX_CONFIG_BYTES, invalid),
                                            invalid), path)
    detector = load(path / DETECTOR_DIR, device=device)
    prep_invalid = _Invalid(path, PREPROCESSING_NAME)
    prep_bytes = _read_limited(path / PREPROCESSING_NAME, MAX_PREPROCESSING_BYTES, prep_invalid)
    recorded = meta.get(PREPROCESSING_DIGEST_KEY)
    if recorded is not None and hashlib.sha256(prep_bytes).hexdigest() != recorded:
        prep_invalid("", f"checksum mismatch: {PIPELINE_CONFIG} records another SHA-256; the file was damaged "
                         f"or changed after saving")
    try:
        untrusted = sio.get_untrusted_types(data=prep_bytes)
    except Exception as exc:  # noqa: BLE001 - skops raises assorted errors on corrupt archives
        prep_invalid.corrupt(str(exc)[:200])
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ValueError(f"{str(path)!r}: refusing to load {PREPROCESSING_NAME}: it contains types that are not "
                         f"allow-listed: {refused}")
    try:
        prep = sio.loads(prep_bytes, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001 - as above
        prep_invalid.corrupt(str(exc)[:200])
    if not isinstance(prep, Pipeline):
        prep_invalid("", "does not hold a Pipeline")
    return Pipeline(list(prep.steps) + [(meta["detector_step"], detector)])
