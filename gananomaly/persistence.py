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
succeed and the last one to swap wins. A load opens every file of the model before it reads
any, and opens them again when the directory at ``path`` was replaced meanwhile: the files it
reads all belong to one save however long the reading takes (a save never changes a file in
place, and an open file stays readable after the next save removes it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gananomaly._atomic import write_bytes
from gananomaly._version import __version__
from gananomaly.estimator import GANAnomalyDetector
from gananomaly.model_dir import OpenFiles, atomic_dir, open_files
from gananomaly.model_format import (
    CONFIG_NAME,
    DETECTOR_DIGEST_KEY,
    DETECTOR_DIR,
    DIGEST_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    LAPGAN_CONFIG,
    LEVELS_DIGEST_KEY,
    MAX_CONFIG_BYTES,
    MAX_PARAMETERS,
    MAX_PREPROCESSING_BYTES,
    MAX_PYRAMID_LEVELS,
    MAX_REFINE_STEPS,
    PIPELINE_CONFIG,
    PREPROCESSING_DIGEST_KEY,
    PREPROCESSING_NAME,
    RECORD_DIGEST_FORMAT,
    RECORD_DIGEST_KEY,
    TRUSTED_TYPES,
    WEIGHTS_NAME,
    Expected,
    Invalid,
    RecordError,
    check_format_version,
    check_part_digest,
    check_pipeline_meta,
    check_record_digest,
    check_weights,
    parse_json,
    read_limited,
    short,
    with_record_digest,
)
from gananomaly.model_format import read_config as _read_config

__all__ = ["save", "load", "read_config", "recorded_digest", "FORMAT_VERSION", "CONFIG_NAME",
           "WEIGHTS_NAME", "TRUSTED_TYPES", "DIGEST_KEY", "MAX_PARAMETERS", "MAX_REFINE_STEPS"]



def read_config(path: str | os.PathLike) -> dict:
    """Read and check ``config.json`` of a saved detector (schema, types, bounds); the message
    of a refusal names the key."""
    return _read_config(path, GANAnomalyDetector)


def recorded_digest(path: str | os.PathLike) -> str | None:
    """The SHA-256 of the weights that the model at ``path`` records (a pipeline's detector's
    for a pipeline); None for a format-3 model, which records none."""
    path = Path(path)
    if (path / PIPELINE_CONFIG).is_file():
        path = path / DETECTOR_DIR
    return read_config(path).get(DIGEST_KEY)


# A load opens every file of one save before it reads any; when a save replaced the
# directory while the files were being opened, it opens them again, at most this many times.
_OPEN_ATTEMPTS = 50
# A LaplacianPyramidDetector: its statistics (LAPGAN_CONFIG), and one detector per level in level_<k>/.
_FILES = (CONFIG_NAME, WEIGHTS_NAME, PIPELINE_CONFIG, PREPROCESSING_NAME, f"{DETECTOR_DIR}/{CONFIG_NAME}",
          f"{DETECTOR_DIR}/{WEIGHTS_NAME}", LAPGAN_CONFIG,
          *(f"level_{k}/{name}" for k in range(MAX_PYRAMID_LEVELS) for name in (CONFIG_NAME, WEIGHTS_NAME)))


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
        back (for instance a size beyond :data:`MAX_PARAMETERS`, or preprocessing holding
        types a load refuses, such as dates kept as categories); nothing is written then.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    path = Path(path)
    if isinstance(obj, Pipeline):
        final = obj.steps[-1][1]
        if not isinstance(final, GANAnomalyDetector):
            raise TypeError(f"the last step of the pipeline must be a GANAnomalyDetector, got {type(final).__name__}")
        check_is_fitted(final)
        import skops.io as sio

        prep = sio.dumps(obj[:-1])
        refused = sorted(set(sio.get_untrusted_types(data=prep)) - set(TRUSTED_TYPES))
        if refused:  # a load would refuse them: the model would be saved but never loaded again
            raise ValueError(f"cannot save to {str(path)!r}: the preprocessing holds types a load refuses: {refused} "
                             "(dates or other objects kept as categories? convert them to numbers or text before "
                             "fitting); nothing was written")

        def write(tmp: Path) -> None:
            detector_digest = final.write_to(tmp / DETECTOR_DIR, path)
            write_bytes(tmp / PREPROCESSING_NAME, prep)
            meta = with_record_digest({"format": FORMAT_NAME, "kind": "pipeline", "format_version": FORMAT_VERSION,
                                       "library_version": __version__, "detector_step": obj.steps[-1][0],
                                       PREPROCESSING_DIGEST_KEY: hashlib.sha256(prep).hexdigest(),
                                       DETECTOR_DIGEST_KEY: detector_digest})
            check_pipeline_meta(meta, path)
            write_bytes(tmp / PIPELINE_CONFIG, json.dumps(meta, indent=2).encode())

        return atomic_dir(path, write)
    from gananomaly.lapgan import LaplacianPyramidDetector

    if isinstance(obj, LaplacianPyramidDetector):
        obj.save(path)  # its own atomic save
        return path
    if not isinstance(obj, GANAnomalyDetector):
        raise TypeError(f"can only save a GANAnomalyDetector, a LaplacianPyramidDetector or a Pipeline ending in a "
                        f"GANAnomalyDetector, got {type(obj).__name__}")
    obj.save(path)  # the detector's own atomic save
    return path



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
    for _ in range(_OPEN_ATTEMPTS):
        files = open_files(path, _FILES)  # one save's files, however long the reads take
        if files is not None:
            break
        time.sleep(0.001)
    else:
        raise ValueError(f"{str(path)!r} was replaced by another save {_OPEN_ATTEMPTS} times while it was opened; "
                         f"load it again when the saves stop")
    with files:
        if files[PIPELINE_CONFIG] is not None:
            return _load_pipeline(path, files, device=device)
        if files[LAPGAN_CONFIG] is not None:
            return _load_lapgan(path, files, device)
        return _load_detector(path, files, "", device)


def _load_lapgan(path: Path, files: OpenFiles, device: str):
    """A LaplacianPyramidDetector: its checked ``lapgan.json`` and one checked detector per level."""
    from gananomaly.lapgan import LaplacianPyramidDetector

    invalid = Invalid(path, LAPGAN_CONFIG)
    meta = parse_json(read_limited(path / LAPGAN_CONFIG, MAX_CONFIG_BYTES, invalid, files[LAPGAN_CONFIG]), invalid)
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT_NAME and meta.get("kind") == "lapgan"):
        invalid("", "does not describe a gananomaly LaplacianPyramidDetector")
    version = check_format_version(meta, invalid, path)
    check_record_digest(meta, version, invalid)
    digests = {LEVELS_DIGEST_KEY, RECORD_DIGEST_KEY}
    required = {"format", "kind", "format_version", "library_version", "params", "image_shape", "level_stats",
                "level_map_stats", "offset"}
    invalid.keys(meta, "", required | (digests if version >= RECORD_DIGEST_FORMAT else set()),
                 digests | {"train_scores"})
    invalid.str(meta["library_version"], "library_version")
    params = meta["params"]
    if not (isinstance(params, dict) and "levels" in params):
        invalid("params.levels", "is missing")
    levels = invalid.int(params["levels"], "params.levels", 1, MAX_PYRAMID_LEVELS)
    recorded = meta.get(LEVELS_DIGEST_KEY)
    if recorded is not None and not (isinstance(recorded, list) and len(recorded) == levels):
        invalid(LEVELS_DIGEST_KEY, f"must list one digest per level ({levels}), got {short(recorded)}")
    detectors = []
    for k in range(levels):  # checked before the pyramid: their shapes are read from their own headers
        if files[f"level_{k}/{CONFIG_NAME}"] is None:
            invalid(f"level_{k}", f"is missing: params.levels is {levels}")
        detectors.append(_load_detector(path / f"level_{k}", files, f"level_{k}/", device,
                                        None if recorded is None else (recorded[k], f"{LEVELS_DIGEST_KEY}[{k}]",
                                                                       invalid)))
    return LaplacianPyramidDetector.from_record(meta, detectors, invalid)


def _load_detector(path: Path, files: OpenFiles, prefix: str, device: str, recorded=None):
    """The detector whose files are ``files[prefix + name]``; ``recorded``: ``(digest, key,
    invalid)`` of the record a pipeline or pyramid file says this detector has."""
    config = _read_config(path, GANAnomalyDetector, files[prefix + CONFIG_NAME])
    if recorded is not None:
        check_part_digest(recorded[0], config, recorded[1], recorded[2])
    invalid = Invalid(path, WEIGHTS_NAME)
    weights = files[prefix + WEIGHTS_NAME]
    if weights is None:
        invalid("", "is missing")
    expected = Expected(config, path)
    tensors = check_weights(read_limited(path / WEIGHTS_NAME, expected.max_bytes, invalid, weights), config, path,
                            expected)
    try:
        return GANAnomalyDetector.from_record(config, tensors, device)
    except RecordError as exc:  # a value the schema allows that the detector still refuses
        Invalid(path, CONFIG_NAME)(exc.key, exc.what)


def _load_pipeline(path: Path, files: OpenFiles, *, device: str):
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    invalid = Invalid(path, PIPELINE_CONFIG)
    meta = check_pipeline_meta(parse_json(read_limited(path / PIPELINE_CONFIG, MAX_CONFIG_BYTES, invalid,
                                                       files[PIPELINE_CONFIG]), invalid), path)
    recorded = meta.get(DETECTOR_DIGEST_KEY)
    detector = _load_detector(path / DETECTOR_DIR, files, f"{DETECTOR_DIR}/", device,
                              None if recorded is None else (recorded, DETECTOR_DIGEST_KEY, invalid))
    prep_invalid = Invalid(path, PREPROCESSING_NAME)
    if files[PREPROCESSING_NAME] is None:
        prep_invalid("", "is a directory, not a file" if (path / PREPROCESSING_NAME).is_dir() else "is missing")
    prep_bytes = read_limited(path / PREPROCESSING_NAME, MAX_PREPROCESSING_BYTES, prep_invalid,
                              files[PREPROCESSING_NAME])
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
    if meta["detector_step"] in {name for name, _ in prep.steps}:
        invalid("detector_step", f"names a preprocessing step ({meta['detector_step']!r}): step names must differ")
    width = _output_width(prep)
    if width is not None and width != detector.n_features_in_:
        prep_invalid("", f"gives {width} features, but the detector in {DETECTOR_DIR}/ takes "
                         f"{detector.n_features_in_}: the two were not saved together")
    return Pipeline(list(prep.steps) + [(meta["detector_step"], detector)])


def _output_width(prep) -> int | None:
    """The number of features the fitted preprocessing ``prep`` gives, from its output names;
    None where a step cannot name them (the width is then known only when data flows)."""
    try:
        return len(prep.get_feature_names_out())
    except Exception:  # noqa: BLE001 - sklearn raises assorted errors for steps without output names
        return None
