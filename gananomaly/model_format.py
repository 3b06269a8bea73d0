"""The on-disk format of a saved detector, and the checks that make loading it safe.

``config.json`` and ``model.safetensors`` are untrusted input: every key, type, bound and
tensor is checked here (see :mod:`gananomaly.persistence` for the order) before anything
large is allocated. The checks stay together in this one module, longer than most, so that
the whole schema of the format can be read (and reviewed) in one place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _load_safetensors

from gananomaly._atomic import write_bytes
from gananomaly._version import __version__

FORMAT_NAME = "gananomaly"
FORMAT_VERSION = 6
# Table models of format 3 differ from format 4 only in lacking the weights digest; image
# models need format 4 (the residual map statistics). Format 5 adds the record digests: every
# JSON file holds the SHA-256 of its own content (RECORD_DIGEST_KEY), and a pipeline's or a
# pyramid's file those of its detectors' records, so no part can be edited, damaged or swapped
# for another save's unnoticed. Format 6 adds the local k-NN term: each bank row's own k-NN
# distance (score.knn_own) and the statistics of the local ratio (loc/scale "knn_local").
# Formats 3 to 5 still load, and score their knn term as the distance alone.
OLDEST_TABLE_FORMAT = 3
OLDEST_IMAGE_FORMAT = 4
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
DIGEST_KEY = "weights_sha256"
RECORD_DIGEST_KEY = "record_sha256"
DETECTOR_DIGEST_KEY = "detector_sha256"
LEVELS_DIGEST_KEY = "levels_sha256"
RECORD_DIGEST_FORMAT = 5
LOCAL_KNN_FORMAT = 6
PIPELINE_CONFIG = "pipeline.json"
PREPROCESSING_NAME = "preprocessing.skops"
PREPROCESSING_DIGEST_KEY = "preprocessing_sha256"
DETECTOR_DIR = "detector"
NETS = {"generator_": "generator", "discriminator_": "discriminator", "encoder_": "encoder"}
# Estimator parameters a saved model does not record (they hold live objects).
UNSAVED_PARAMS = {"callbacks"}
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
# Learning rates (and the refinement step) above this are refused: far above any that trains (a
# larger one diverges, which the fit reports), far below float32's range (torch's optimisers fail
# on a rate that does not fit in it).
MAX_LEARNING_RATE = 1e10
MAX_REFINE_STEPS = 10_000
MAX_HISTORY_VALUES = 10_000_000
MAX_STRING = 4096

_TOP_KEYS = {"format", "format_version", "library_version", "params", "arch", "fitted", "history", DIGEST_KEY,
             RECORD_DIGEST_KEY}
# Parameters saved as JSON lists and restored as tuples.
TUPLE_PARAMS = ("hidden_dims", "betas")
# The statistics file of a saved LaplacianPyramidDetector (beside its level_<k>/ detectors), and
# the most pyramid levels (the coarsest image then has side S / 128).
LAPGAN_CONFIG = "lapgan.json"
MAX_PYRAMID_LEVELS = 8
_MLP_KEYS = {"kind", "n_features", "latent_dim", "hidden_dims", "joint", "spectral_norm", "dropout"}
_CONV_KEYS = {"kind", "channels", "size", "latent_dim", "width", "joint", "spectral_norm", "dropout"}
_FITTED_REQUIRED = {"n_features_in_", "offset_", "score_config"}
_FITTED_OPTIONAL = {"feature_names_in_", "n_epochs_", "extra", "threshold_"}
_SCORE_KEYS = {"joint", "n_refine_steps", "refine_lr", "kappa", "loc", "scale"}
_EXTRA_KEYS = {"image_shape", "objective", "fidelity", "context_categories", "context_mean", "context_scale",
               "context_names"}
_PIPELINE_KEYS = {"format", "kind", "format_version", "library_version", "detector_step", PREPROCESSING_DIGEST_KEY,
                  DETECTOR_DIGEST_KEY, RECORD_DIGEST_KEY}
# Estimator parameters that may be booleans (the others never are: True is not an epoch count).
_BOOL_PARAMS = {"early_stopping", "verbose"}
_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


class Invalid:
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
            self(key, f"must be an integer, got {_kind(value)} {short(value)}")
        if not lo <= value <= hi:
            self(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, value: Any, key: str, *, lo: float = -math.inf, positive: bool = False,
               hi: float = math.inf, finite: bool = True) -> float:
        if type(value) not in (int, float):
            self(key, f"must be a number, got {_kind(value)} {short(value)}")
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
            self(key, f"must be true or false, got {_kind(value)} {short(value)}")
        return value

    def str(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if type(value) is not str:
            self(key, f"must be a string, got {_kind(value)} {short(value)}")
        if len(value) > MAX_STRING:
            self(key, f"is longer than {MAX_STRING} characters")
        if choices is not None and value not in choices:
            self(key, f"must be one of {list(choices)}, got {short(value)}")
        return value

    def list(self, value: Any, key: str, lo: int, hi: int) -> list:
        if type(value) is not list:
            self(key, f"must be a list, got {_kind(value)} {short(value)}")
        if not lo <= len(value) <= hi:
            self(key, f"must have between {lo} and {hi} entries, got {len(value)}")
        return value


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_json(data: bytes, invalid: Invalid) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        invalid.corrupt("nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        invalid.corrupt(str(exc)[:200])


def read_limited(path: Path, limit: int, invalid: Invalid, fh=None) -> bytes:
    """At most ``limit`` bytes of ``path`` (or of the open binary file ``fh``, read from its start)."""
    if fh is not None:
        fh.seek(0)
        data = fh.read(limit + 1)
    else:
        try:
            with open(path, "rb") as opened:
                data = opened.read(limit + 1)
        except FileNotFoundError:
            invalid("", "is missing")
        except IsADirectoryError:
            invalid("", "is a directory, not a file")
    if len(data) > limit:
        invalid("", f"is larger than {limit} bytes")
    return data


def record_digest(doc: dict) -> str:
    """SHA-256 of a JSON record's content without its own digest (key order and spacing do
    not count: the canonical JSON of the parsed values)."""
    body = {k: v for k, v in doc.items() if k != RECORD_DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_record_digest(doc: dict) -> dict:
    """``doc`` with its :func:`record_digest` (what a save writes)."""
    return {**doc, RECORD_DIGEST_KEY: record_digest(doc)}


def _hex_digest(value: Any, key: str, invalid: Invalid) -> str:
    digest = invalid.str(value, key)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        invalid(key, "must be 64 lowercase hexadecimal digits")
    return digest


def check_record_digest(doc: dict, version: int, invalid: Invalid) -> None:
    """From format 5, a record carries the digest of its content: a missing or differing one
    (a damaged file, or an edit after the save) is refused."""
    if version < RECORD_DIGEST_FORMAT and RECORD_DIGEST_KEY not in doc:
        return
    if RECORD_DIGEST_KEY not in doc:
        invalid(RECORD_DIGEST_KEY, f"is missing (format {version} files record the SHA-256 of their content)")
    recorded = _hex_digest(doc[RECORD_DIGEST_KEY], RECORD_DIGEST_KEY, invalid)
    if recorded != record_digest(doc):
        invalid("", f"checksum mismatch: its {RECORD_DIGEST_KEY} does not match its content; the file was damaged "
                    "or edited after saving")


def check_part_digest(recorded: Any, part: dict, key: str, invalid: Invalid) -> None:
    """A pipeline's or pyramid's record of one detector's ``record_sha256`` must be the one
    that detector's config holds (a detector from another save swapped in is refused)."""
    expected = _hex_digest(recorded, key, invalid)
    if part.get(RECORD_DIGEST_KEY) != expected:
        invalid(key, f"does not match the record of the detector it names ({CONFIG_NAME} holds "
                     f"{str(part.get(RECORD_DIGEST_KEY))[:16]}..., expected {expected[:16]}...): a part of "
                     "another save, or a damaged file")


def check_format_version(doc: dict, invalid: Invalid, path: Path) -> int:
    version = doc.get("format_version")
    if version is None:
        invalid("format_version", "is missing")
    if type(version) is not int:
        invalid("format_version", f"must be an integer, got {_kind(version)} {short(version)}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"model at {str(path)!r} has format version {version}, newer than this gananomaly "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade gananomaly to load it"
        )
    if version < 1:
        invalid("format_version", f"must be a positive integer, got {version}")
    return version


def read_config(path: str | os.PathLike, detector_cls: type, fh=None) -> dict[str, Any]:
    """Read and check ``config.json`` of a saved model (schema, types, bounds); the saved
    parameters must be ones ``detector_cls`` accepts. ``fh``: the file already open.

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
    invalid = Invalid(path, CONFIG_NAME)
    if not path.is_dir():
        invalid("", "is missing (the path is a file, not a model directory)")
    if fh is None and not (path / CONFIG_NAME).exists():
        invalid("", "is missing")
    doc = parse_json(read_limited(path / CONFIG_NAME, MAX_CONFIG_BYTES, invalid, fh), invalid)
    return check_config(doc, path, detector_cls)


def check_config(doc: Any, path: Path, detector_cls: type) -> dict[str, Any]:
    """The checks of :func:`read_config` on the parsed document."""
    invalid = Invalid(path, CONFIG_NAME)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        invalid("", "does not describe a gananomaly model")
    version = check_format_version(doc, invalid, path)
    check_record_digest(doc, version, invalid)
    invalid.keys(doc, "", _TOP_KEYS - {DIGEST_KEY, RECORD_DIGEST_KEY}, {DIGEST_KEY, RECORD_DIGEST_KEY})
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
        _hex_digest(doc[DIGEST_KEY], DIGEST_KEY, invalid)
    _check_params(doc["params"], invalid, detector_cls)
    _check_fitted(doc["fitted"], arch, invalid, version)
    _check_history(doc["history"], invalid)
    return doc


def _check_arch(arch: Any, invalid: Invalid) -> dict:
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
        invalid("arch.kind", f"must be 'mlp' or 'conv', got {short(kind)}")
    invalid.int(arch["latent_dim"], "arch.latent_dim", 1, MAX_DIM)
    invalid.bool(arch["joint"], "arch.joint")
    invalid.bool(arch["spectral_norm"], "arch.spectral_norm")
    invalid.number(arch["dropout"], "arch.dropout", lo=0.0, hi=0.999)
    return arch


def with_tuples(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the :data:`TUPLE_PARAMS` given as lists (JSON, TOML) as tuples."""
    return {k: tuple(v) if k in TUPLE_PARAMS and isinstance(v, list) else v for k, v in params.items()}


def _check_params(params: Any, invalid: Invalid, detector_cls: type) -> None:
    known = set(detector_cls().get_params(deep=False)) - UNSAVED_PARAMS
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
            if key == "hidden_dims":
                for i, h in enumerate(invalid.list(value, name, 1, MAX_LAYERS)):
                    invalid.int(h, f"{name}[{i}]", 1, MAX_DIM)
            elif key == "betas":  # Adam's (beta1, beta2)
                for i, b in enumerate(invalid.list(value, name, 2, 2)):
                    if not invalid.number(b, f"{name}[{i}]", lo=0.0) < 1.0:
                        invalid(f"{name}[{i}]", f"must be in [0, 1), got {b}")
            else:
                invalid(name, "must not be a list")
    if type(params.get("n_refine_steps")) is int:
        invalid.int(params["n_refine_steps"], "params.n_refine_steps", 0, MAX_REFINE_STEPS)
    est = detector_cls()
    est.set_params(**with_tuples(params))
    try:
        est._validate_params()
    except (ValueError, TypeError) as exc:
        invalid("params", f"is invalid: {exc}")


def _check_fitted(fitted: Any, arch: dict, invalid: Invalid, version: int) -> None:
    from gananomaly.scoring import RELATIVE_SCALE_FLOOR, stat_names

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
        elif threshold["contamination"] != "auto":  # set_threshold(fpr=...) pins any share in (0, 1)
            share = invalid.number(threshold["contamination"], "fitted.threshold_.contamination", lo=0.0, hi=1.0,
                                   positive=True)
            if share >= 1.0:
                invalid("fitted.threshold_.contamination", f"must be below 1, got {share}")
    if "n_epochs_" in fitted:
        invalid.int(fitted["n_epochs_"], "fitted.n_epochs_", 0, 2**31)
    sc = invalid.keys(fitted["score_config"], "fitted.score_config", _SCORE_KEYS)
    if invalid.bool(sc["joint"], "fitted.score_config.joint") != arch["joint"]:
        invalid("fitted.score_config.joint", f"must equal arch.joint ({arch['joint']})")
    invalid.int(sc["n_refine_steps"], "fitted.score_config.n_refine_steps", 0, MAX_REFINE_STEPS)
    invalid.number(sc["refine_lr"], "fitted.score_config.refine_lr", positive=True, hi=MAX_LEARNING_RATE)
    invalid.number(sc["kappa"], "fitted.score_config.kappa", lo=0.0)
    names = stat_names(version >= LOCAL_KNN_FORMAT)  # the local k-NN term's statistics: from format 6 on
    for part, positive in (("loc", False), ("scale", True)):
        key = f"fitted.score_config.{part}"
        stats = invalid.keys(sc[part], key, set(names))
        for name in names:
            invalid.number(stats[name], f"{key}.{name}", positive=positive)
    for name in names:  # the fit floors every scale at a share of its location (scoring.robust_stats)
        loc, scale = sc["loc"][name], sc["scale"][name]
        if scale < RELATIVE_SCALE_FLOOR * abs(loc) * (1 - 1e-9):
            invalid(f"fitted.score_config.scale.{name}", f"is {scale}, below {RELATIVE_SCALE_FLOOR} of its location "
                                                         f"{loc}, which a fit never gives")
    _check_extra(fitted.get("extra", {}), arch, n, invalid)


def _check_extra(extra: Any, arch: dict, n_features: int, invalid: Invalid) -> None:
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
            invalid.int(v, f"fitted.extra.image_shape[{i}]", 1, 3 if i == 0 else MAX_IMAGE_SIDE)
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
    names = extra.get("context_names")
    if names is not None:
        # the columns of the input table the context is read from: the one column of a
        # categorical context, one per column of a numeric one
        want = 1 if cats is not None else (context_dim if mean is not None else 0)
        if want == 0:
            invalid("fitted.extra.context_names", "needs a context (context_categories or context_mean)")
        invalid.list(names, "fitted.extra.context_names", want, want)
        for i, name in enumerate(names):
            invalid.str(name, f"fitted.extra.context_names[{i}]")
        if len(set(names)) != len(names) or not all(names):
            invalid("fitted.extra.context_names", "must be distinct non-empty strings")


def _check_history(history: Any, invalid: Invalid) -> None:
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


class Expected:
    """The tensors an architecture needs: name -> (dtype, shape, description)."""

    def __init__(self, config: dict, path: Path):
        from gananomaly.networks import build_networks
        from gananomaly.scoring import COMPONENTS, KNN_BANK_ROWS, TRAIN_SCORE_ROWS

        arch = config["arch"]
        invalid = Invalid(path, CONFIG_NAME)
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated
                nets = build_networks(arch)
        except Exception as exc:  # noqa: BLE001 - any failure means the spec describes no network
            invalid("arch", f"does not describe networks this gananomaly builds ({str(exc)[:200]})")
        self.tensors: dict[str, tuple[str, tuple[int | None, ...], str]] = {}
        n_params = 0
        for net, prefix in zip(nets, NETS.values()):
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
        if config["format_version"] >= LOCAL_KNN_FORMAT:
            self.tensors["score.knn_own"] = ("F32", (None,), "the knn bank's own distances")
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


def _read_header(data: bytes, invalid: Invalid) -> dict[str, tuple[str, tuple[int, ...]]]:
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


def check_weights(data: bytes, config: dict, path: Path,
                   expected: Expected | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``data`` once header, values and digest have passed."""
    invalid = Invalid(path, WEIGHTS_NAME)
    expected = expected or Expected(config, path)
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
    if "score.knn_own" in expected.tensors and header["score.knn_own"][1][0] != rows:
        invalid("score.knn_own", f"(the knn bank's own distances) must have one value per bank row ({rows}), "
                                 f"got {header['score.knn_own'][1][0]}")
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
    for name in ("input.scale", "score.map_scale", "score.knn_own"):
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


def check_pipeline_meta(meta: Any, path: Path) -> dict:
    invalid = Invalid(path, PIPELINE_CONFIG)
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and meta.get("kind") == "pipeline"):
        invalid("", "does not describe a gananomaly pipeline")
    version = check_format_version(meta, invalid, path)
    check_record_digest(meta, version, invalid)
    optional = {PREPROCESSING_DIGEST_KEY, DETECTOR_DIGEST_KEY, RECORD_DIGEST_KEY}
    required = _PIPELINE_KEYS - optional
    if version >= 4 and PREPROCESSING_DIGEST_KEY not in meta:
        invalid(PREPROCESSING_DIGEST_KEY, f"is missing (format {version} pipelines record the SHA-256 of "
                                          f"{PREPROCESSING_NAME}); save the pipeline again with this gananomaly")
    if version >= RECORD_DIGEST_FORMAT and DETECTOR_DIGEST_KEY not in meta:
        invalid(DETECTOR_DIGEST_KEY, f"is missing (format {version} pipelines record their detector's record)")
    invalid.keys(meta, "", required, optional)
    invalid.str(meta["library_version"], "library_version")
    step = invalid.str(meta["detector_step"], "detector_step")
    if not step or "__" in step:
        invalid("detector_step", f"must be a non-empty step name without '__', got {short(step)}")
    if PREPROCESSING_DIGEST_KEY in meta:
        _hex_digest(meta[PREPROCESSING_DIGEST_KEY], PREPROCESSING_DIGEST_KEY, invalid)
    return meta


class RecordError(ValueError):
    """A saved record that passed the schema but that the detector refuses: ``key`` names
    the config key at fault, ``what`` says why."""

    def __init__(self, key: str, what: str):
        super().__init__(f"{key} {what}")
        self.key, self.what = key, what


def write_detector(out: Path, tensors: dict[str, torch.Tensor], record: dict[str, Any], final: Path,
                   detector_cls: type) -> str:
    """Write one detector's files into the directory ``out`` (created): ``tensors`` as
    safetensors, ``record`` (``params``, ``arch``, ``fitted``, ``history``) as the JSON config
    with the format, versions and the weights' SHA-256. What would not load back (the same
    checks as loading) is refused before anything is written; ``final`` names the model."""
    from safetensors.torch import save as dump_safetensors

    out.mkdir(exist_ok=True)
    weights = dump_safetensors(tensors, metadata={"format": FORMAT_NAME})
    # A model fitted before the local k-NN term (loaded from format 3-5, or unpickled) has no
    # bank distances of its own: it is written in the last format that describes it.
    version = FORMAT_VERSION if "score.knn_own" in tensors else LOCAL_KNN_FORMAT - 1
    config = with_record_digest(json.loads(json.dumps(  # the digest of what a load parses
        {"format": FORMAT_NAME, "format_version": version, "library_version": __version__,
         DIGEST_KEY: hashlib.sha256(weights).hexdigest(), **record})))
    text = json.dumps(config, indent=2)
    try:
        checked = check_config(json.loads(text), final, detector_cls)
        check_weights(weights, checked, final)
    except ValueError as exc:
        raise ValueError(f"cannot save model to {str(final)!r}: it would not load back ({exc})") from exc
    write_bytes(out / WEIGHTS_NAME, weights)
    write_bytes(out / CONFIG_NAME, text.encode())
    return config[RECORD_DIGEST_KEY]
