"""Batch scoring: stream a CSV/Parquet file of any size through a fitted model.

``gananomaly score --model MODEL --input big.parquet --output scores.parquet`` reads the
input in chunks of ``--chunk-rows`` rows (pyarrow ``ParquetFile.iter_batches``, pandas
``read_csv(chunksize=...)``), so memory stays bounded by the chunk size whatever the file
size, and writes one row per scored input row: the ID column (when given),
``discriminator``, ``reconstruction``, ``latent``, ``knn``, ``combined`` (higher = more anomalous), ``score``
(``score_samples``: higher = more normal) and ``label`` (+1 inlier, -1 outlier).

One job per output
------------------
A job holds an exclusive ``flock`` on ``<output>.lock`` from before it touches anything
until it ends (the kernel releases it when the process dies, so a killed job leaves no
stale lock). A second job on the same output is refused at once with an
:class:`OutputError` naming the output, the lock and the holder's pid.

Atomic output and resume
------------------------
Chunk ``k`` is scored into ``<output>.parts/part-<k>.parquet`` and committed by writing
``part-<k>.json`` (its row counts, skipped rows and the first and last input row it
covers) next to it; both are written to a temporary name and renamed.
``<output>.parts/manifest.json`` records what the parts belong to: the input's absolute
path, size and SHA-256 of its content (file names and bytes for an image folder), the
chunk size, the ID column, the bad-input policies and a fingerprint of the model. When
every chunk is done the parts are concatenated into a uniquely named temporary file next
to ``<output>``, which is renamed onto it (same directory, so the rename is atomic)
before the work directory is removed. A crash at any point leaves no file at
``<output>`` (or the previous one, untouched).

``--resume`` (``resume=True``) reuses the committed parts of an interrupted run when the
manifest matches; the input is re-read from the start but committed chunks are not
scored again, so every input row is scored exactly once. A part is reused only when its
metadata covers the same input rows as the chunk just read and the part holds as many
rows as its metadata says; any other part is scored again. A mismatch of the manifest
(the input's content, the chunk size, the ID column, the policies or the model changed)
is an error: an input edited in place with its modification time restored is caught by
the content hash (about 0.6 s per GB, a small share of scoring it). A run under
``--on-bad-rows error`` / ``--unseen error`` may be resumed with the lenient policy (its
chunks are what that policy writes too), not the reverse. Without ``--resume`` nothing is
reused: an existing work directory is discarded (with a warning) and scoring starts over.

Failed writes
-------------
A full disk, a read-only or foreign directory: an :class:`OutputError` (an ``OSError``
that is also a ``ValueError``, so ``gananomaly score`` prints one line and exits with 2)
naming what could not be written. No temporary file is left behind, the previous output
is untouched and the committed chunks stay for ``--resume``.

Values too large to score
-------------------------
The networks compute in float32: a value standardised by the detector's own training
scale (``input_mean_``, ``input_scale_``, after a pipeline's preprocessing) beyond
:data:`MAX_STANDARDISED` (or not finite) would come out as an infinite score. Such rows are
bad rows (``--on-bad-rows``): an error naming rows, columns and values, or skipped and
counted in ``bad_values``. A row whose scores still come out non-finite is treated the
same way, so the output never holds inf or NaN.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines.tabular import ModelSchema, file_format, format_rows, model_schema, prepare_frame

from gananomaly import estimator as _estimator
from gananomaly._atomic import atomic_open

__all__ = [
    "SCORE_COLUMNS",
    "MAX_STANDARDISED",
    "OutputError",
    "ScoreReport",
    "load_model",
    "model_fingerprint",
    "score_prepared",
    "score_frame",
    "score_file",
    "benchmark_batch_score",
    "add_score_arguments",
    "run_score_command",
    "register_cli",
]

log = logging.getLogger(__name__)

SCORE_COLUMNS = _estimator.SCORE_COLUMNS
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "gananomaly-batch-score"
MANIFEST_VERSION = 2
#: Seconds to sleep after each committed chunk (to share a busy machine; also lets a
#: supervisor interrupt a job at a chunk boundary).
THROTTLE_ENV = "GANANOMALY_BATCH_THROTTLE_S"
_EXTRA_POLICIES = ("drop", "error")
_BAD_ROW_POLICIES = ("error", "skip")
_UNSEEN_POLICIES = ("score", "error")
_MAX_LISTED_ROWS = 1000
#: A value further than this many training standard deviations (the detector's
#: ``input_scale_``) from the training mean (``input_mean_``) is not scored: the networks
#: compute in float32 and such inputs overflow to inf a few layers in (1e20 already gives
#: an infinite score). The row is a bad row (``on_bad_rows``). The bound sits far above any
#: plausible anomaly, which is still scored (and scores as one).
MAX_STANDARDISED = 1e6


# ---------------------------------------------------------------------------------- model
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


def _with_threshold(spec, threshold: dict[str, Any]):
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


# ---------------------------------------------------------------------------------- scoring
def score_prepared(model, X) -> pd.DataFrame:
    """Scores of rows already converted by :func:`gananomaly.pipelines.tabular.prepare_frame`.

    One pass through the networks gives all five columns; ``score`` and ``label`` equal
    ``model.score_samples(X)`` and ``model.predict(X)`` exactly.
    """
    if len(X) == 0:
        return _empty_scores()
    return _score_transformed(*_transform(model, X))


def _empty_scores() -> pd.DataFrame:
    return pd.DataFrame({c: np.empty(0, dtype=np.int64 if c == "label" else np.float64) for c in SCORE_COLUMNS})


def _transform(model, X) -> tuple[Any, Any]:
    """(detector, X after the pipeline's preprocessing): what the detector itself sees."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return model.steps[-1][1], (model[:-1].transform(X) if len(model.steps) > 1 else X)
    return model, X


def _score_transformed(det, Xt) -> pd.DataFrame:
    if len(Xt) == 0:
        return _empty_scores()
    return det.score_table(Xt).reset_index(drop=True)


def _standardised(det, Xt) -> np.ndarray | None:
    """``|Xt - input_mean_| / input_scale_`` (the detector's own standardisation, in float64;
    NaN where a value is not finite), or None when the detector has no such scaler."""
    mean, scale = getattr(det, "input_mean_", None), getattr(det, "input_scale_", None)
    try:
        A = np.asarray(Xt, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if mean is None or scale is None or A.ndim != 2 or np.shape(mean) != (A.shape[1],):
        return None
    with np.errstate(all="ignore"):
        z = np.abs((A - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64))
    z[~np.isfinite(A)] = np.nan
    return z


def _feature_sources(model, Xt, raw_columns: list[str]) -> list[str]:
    """For each column the detector sees, the input column it comes from (for messages):
    the ColumnTransformer's ``<transformer>__<column>`` names mapped back to input columns."""
    from sklearn.pipeline import Pipeline

    width = np.shape(Xt)[1]
    names: list[str] = list(map(str, raw_columns))
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        try:
            names = [str(n) for n in model[:-1].get_feature_names_out()]
        except Exception:  # a step without feature names: positions are all we can tell
            names = [str(j) for j in range(width)]
    if len(names) != width:
        names = [str(j) for j in range(width)]
    raw = set(map(str, raw_columns))
    out = []
    for n in names:
        tail = n.split("__", 1)[-1]
        out.append(n if n in raw else tail if tail in raw else f"feature {n} (after preprocessing)")
    return out


@dataclass
class ScoreReport:
    """Counts of one scored table (or the sum over a file's chunks).

    Attributes
    ----------
    rows_read : int
        Data rows in the input (malformed CSV lines included).
    rows_scored : int
    skipped_rows : list of int
        Row numbers (1-based data rows, header excluded) that were skipped, at most 1000 listed.
    n_skipped : int
    bad_values : dict
        Column -> number of rows with unparseable values, values not finite or too large
        to score (beyond :data:`MAX_STANDARDISED`), or scores that came out non-finite.
    malformed_rows : int
        CSV lines with the wrong number of fields.
    unseen_categories : dict
        Column -> number of rows with a category not seen in training (scored as all-zero one-hot).
    unseen_examples : dict
        Column -> up to 5 ``[row, value]`` pairs.
    """

    rows_read: int = 0
    rows_scored: int = 0
    skipped_rows: list[int] = field(default_factory=list)
    n_skipped: int = 0
    bad_values: dict[str, int] = field(default_factory=dict)
    malformed_rows: int = 0
    unseen_categories: dict[str, int] = field(default_factory=dict)
    unseen_examples: dict[str, list] = field(default_factory=dict)

    def add(self, other: ScoreReport) -> None:
        self.rows_read += other.rows_read
        self.rows_scored += other.rows_scored
        self.n_skipped += other.n_skipped
        room = _MAX_LISTED_ROWS - len(self.skipped_rows)
        self.skipped_rows.extend(other.skipped_rows[:max(room, 0)])
        self.malformed_rows += other.malformed_rows
        for key, value in other.bad_values.items():
            self.bad_values[key] = self.bad_values.get(key, 0) + value
        for key, value in other.unseen_categories.items():
            self.unseen_categories[key] = self.unseen_categories.get(key, 0) + value
        for key, value in other.unseen_examples.items():
            ex = self.unseen_examples.setdefault(key, [])
            ex.extend(value[: max(0, 5 - len(ex))])

    def to_dict(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "rows_scored": self.rows_scored, "n_skipped": self.n_skipped,
                "skipped_rows": list(self.skipped_rows), "bad_values": dict(self.bad_values),
                "malformed_rows": self.malformed_rows, "unseen_categories": dict(self.unseen_categories),
                "unseen_examples": {k: list(v) for k, v in self.unseen_examples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreReport:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _check_policy(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_columns(columns: list[str], schema: ModelSchema, id_column: str | None, extra_columns: str,
                   where: str) -> list[str]:
    """Check the input's columns against the model; return the extra ones."""
    if not schema.named:
        return []
    missing = [c for c in schema.columns if c not in columns]
    if missing:
        raise ValueError(f"{where} is missing column(s) {missing} that the model needs "
                         f"(model columns: {schema.columns}; input columns: {columns})")
    if id_column is not None and id_column not in columns:
        raise ValueError(f"{where} has no ID column {id_column!r} (input columns: {columns})")
    if id_column is not None and id_column in schema.columns:
        raise ValueError(f"ID column {id_column!r} is one of the model's feature columns")
    extra = [c for c in columns if c not in schema.columns and c != id_column]
    if extra and extra_columns == "error":
        raise ValueError(f"{where} has column(s) {extra} that the model was not fitted on "
                         "(use extra_columns='drop' / --extra-columns drop to ignore them)")
    return extra


def _unseen(frame: pd.DataFrame, schema: ModelSchema, rows: np.ndarray, report: ScoreReport, unseen: str,
            where: str) -> np.ndarray:
    """Rows of ``frame`` holding a category never seen in training (counted in ``report``),
    or an error naming them under ``unseen="error"``."""
    any_unseen = np.zeros(len(frame), dtype=bool)
    for col in schema.categorical:
        known = schema.categories.get(col)
        if not known:
            continue
        values = frame[col]
        mask = values.notna().to_numpy() & ~values.isin(known).to_numpy()
        if not mask.any():
            continue
        if unseen == "error":
            bad_rows = rows[mask].tolist()
            raise ValueError(f"{where}: column {col!r} has categories not seen in training in rows "
                             f"{format_rows(bad_rows)} (e.g. {values[mask].unique()[:5].tolist()!r}; known: "
                             f"{sorted(known)[:20]}); use unseen='score' / --unseen score to score them")
        any_unseen |= mask
        report.unseen_categories[col] = report.unseen_categories.get(col, 0) + int(mask.sum())
        ex = report.unseen_examples.setdefault(col, [])
        for r, v in zip(rows[mask][:5].tolist(), values[mask][:5].tolist()):
            if len(ex) < 5:
                ex.append([int(r), v])
    return any_unseen


def score_frame(model, df: pd.DataFrame, *, id_column: str | None = None, extra_columns: str = "drop",
                on_bad_rows: str = "error", unseen: str = "score", row_numbers: np.ndarray | None = None,
                where: str = "input", schema: ModelSchema | None = None,
                _checked: bool = False) -> tuple[pd.DataFrame, ScoreReport]:
    """Score a DataFrame with a fitted model, applying the bad-input policies.

    Parameters
    ----------
    model : fitted GANAnomalyDetector or Pipeline ending in one
    df : DataFrame
    id_column : str, optional
        Copied to the output as its first column.
    extra_columns : {"drop", "error"}, default="drop"
        Columns the model does not use: dropped (with a warning) or an error.
    on_bad_rows : {"error", "skip"}, default="error"
        Rows with a value that is not a number in a numeric column, or one too large to
        score (see :data:`MAX_STANDARDISED`): an error naming the column, rows and values,
        or skipped (counted and listed in the report).
    unseen : {"score", "error"}, default="score"
        Categories not seen in training: scored (encoded as all zeros, counted in the
        report, and labelled -1: an outlier whatever its score) or an error naming the
        column and rows.
    row_numbers : ndarray, optional
        Row numbers used in messages (default 1, 2, ...).
    where : str
        Name of the input in messages.
    schema : ModelSchema, optional
        ``model_schema(model)`` when already known.

    Returns
    -------
    (scores, report)
    """
    _check_policy("extra_columns", extra_columns, _EXTRA_POLICIES)
    _check_policy("on_bad_rows", on_bad_rows, _BAD_ROW_POLICIES)
    _check_policy("unseen", unseen, _UNSEEN_POLICIES)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    schema = schema or model_schema(model)
    df = df.rename(columns=str)
    if not _checked:
        extra = _check_columns(list(df.columns), schema, id_column, extra_columns, where)
        if extra:
            log.warning("%s: ignoring column(s) the model does not use: %s", where, extra)
    rows = np.arange(1, len(df) + 1) if row_numbers is None else np.asarray(row_numbers)
    report = ScoreReport(rows_read=len(df))
    if schema.named:
        frame, keep, bad = prepare_frame(df, schema, row_numbers=rows, on_bad_rows=on_bad_rows, where=where)
        raw_columns = list(schema.numeric)
    else:
        feats = df.drop(columns=[id_column]) if id_column else df
        if feats.shape[1] != len(schema.numeric):
            raise ValueError(f"{where} has {feats.shape[1]} feature column(s); the model expects {len(schema.numeric)}")
        raw_columns = [str(c) for c in feats.columns]
        tmp = ModelSchema(raw_columns, [])
        frame, keep, bad = prepare_frame(feats, tmp, row_numbers=rows, on_bad_rows=on_bad_rows, where=where)
        frame = frame.to_numpy()
    keep = keep.copy()
    for col, r in bad.items():
        report.bad_values[col] = len(r)
    det, Xt, z, sources = None, frame, None, []
    if len(frame):  # (a pipeline's preprocessing refuses zero rows)
        det, Xt = _transform(model, frame)
        z = _standardised(det, Xt)
        sources = _feature_sources(model, Xt, raw_columns) if z is not None else []
        drop = _unscorable_values(z, sources, df, rows, keep, on_bad_rows, where, report)
        if drop.any():
            frame, Xt = _take(frame, ~drop), _take(Xt, ~drop)
            z = z[~drop]
    unseen_rows = _unseen(frame, schema, rows[keep], report, unseen, where) if schema.named else None
    scores = _score_transformed(det, Xt)
    if unseen_rows is not None and unseen_rows.any():
        # A category the model never saw is encoded as all zeros, which can look normal:
        # such rows are outliers by definition, whatever their score.
        scores.loc[unseen_rows, "label"] = -1
    if len(scores):
        drop = _nonfinite_scores(scores, z, sources, rows, keep, on_bad_rows, where, report)
        if drop.any():
            scores = scores.loc[~drop].reset_index(drop=True)
    report.n_skipped = int((~keep).sum())
    report.skipped_rows = rows[~keep][:_MAX_LISTED_ROWS].tolist()
    if id_column is not None:
        scores.insert(0, id_column, df[id_column].to_numpy()[keep])
    report.rows_scored = len(scores)
    return scores, report


def _take(X, mask: np.ndarray):
    return X.loc[X.index[mask]] if isinstance(X, pd.DataFrame) else X[mask]


def _skip_message(on_bad_rows: str, where: str, what: str, details: str) -> None:
    """Raise (policy "error") or log (policy "skip") rows that cannot be scored."""
    if on_bad_rows == "error":
        raise ValueError(f"{where}: {what}: {details}. Fix them or skip those rows (on_bad_rows='skip', "
                         "--on-bad-rows skip)")
    log.warning("%s: skipping rows: %s: %s", where, what, details)


def _unscorable_values(z: np.ndarray | None, sources: list[str], df: pd.DataFrame, rows: np.ndarray,
                       keep: np.ndarray, on_bad_rows: str, where: str, report: ScoreReport) -> np.ndarray:
    """Rows (of the kept ones) with a value the networks cannot score: not finite as the
    detector sees it, or more than :data:`MAX_STANDARDISED` training scales from the training
    mean (float32 arithmetic overflows to inf a few layers later). ``on_bad_rows`` decides:
    an error naming rows and columns, or the rows are dropped from ``keep`` and counted per
    column in ``report.bad_values``. Returns the mask of dropped rows."""
    if z is None:
        return np.zeros(int(keep.sum()), dtype=bool)
    bad = ~(z <= MAX_STANDARDISED)  # NaN (a value that is not finite) included
    drop = bad.any(axis=1)
    if not drop.any():
        return drop
    pos = np.flatnonzero(keep)
    per_col: dict[str, np.ndarray] = {}
    for j in np.flatnonzero(bad.any(axis=0)):
        per_col[sources[j]] = per_col.get(sources[j], np.zeros(len(drop), dtype=bool)) | bad[:, j]
    parts = []
    for col, m in per_col.items():
        example = df[col].iloc[pos[m][:3]].tolist() if col in df.columns else []
        parts.append(f"column {col!r}: rows {format_rows(rows[pos[m]].tolist())}"
                     + (f" (e.g. {example!r})" if example else ""))
        report.bad_values[col] = report.bad_values.get(col, 0) + int(m.sum())
    _skip_message(on_bad_rows, where, f"values that are not finite or too large to score (more than "
                  f"{MAX_STANDARDISED:g} training standard deviations from the training mean)", "; ".join(parts))
    keep[pos[drop]] = False
    return drop


def _nonfinite_scores(scores: pd.DataFrame, z: np.ndarray | None, sources: list[str], rows: np.ndarray,
                      keep: np.ndarray, on_bad_rows: str, where: str, report: ScoreReport) -> np.ndarray:
    """The last guard: rows whose scores are not finite are an error or skipped, never written."""
    values = scores[[c for c in SCORE_COLUMNS if c != "label"]].to_numpy(dtype=np.float64)
    drop = ~np.isfinite(values).all(axis=1)
    if not drop.any():
        return drop
    pos = np.flatnonzero(keep)
    detail = f"rows {format_rows(rows[pos[drop]].tolist())}"
    culprit = "(scores)"
    if z is not None and z.shape[1]:
        j = int(np.nanargmax(np.nan_to_num(z[drop], nan=np.inf).max(axis=0)))
        culprit = sources[j]
        detail += f"; the most extreme value is in column {culprit!r}"
    _skip_message(on_bad_rows, where, "the model's scores are not finite", detail)
    report.bad_values[culprit] = report.bad_values.get(culprit, 0) + int(drop.sum())
    keep[pos[drop]] = False
    return drop


# ---------------------------------------------------------------------------------- readers
_BAD_LINE = re.compile(r"[Ss]kipping line (\d+): (.*)")
_PARSER_ERR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


@dataclass
class _Chunk:
    index: int
    frame: pd.DataFrame
    rows: np.ndarray
    malformed: list[int]


def _input_columns(path: Path, fmt: str) -> tuple[list[str], int | None]:
    """Column names and (Parquet) row count of the input, read from its header/footer."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on non-Parquet bytes
            raise ValueError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc
        return [str(n) for n in pf.schema_arrow.names], int(pf.metadata.num_rows)
    try:
        header = pd.read_csv(path, nrows=0)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{str(path)!r} is empty (no header line)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable CSV file: {exc}") from exc
    return [str(c) for c in header.columns], None


def _parquet_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator[_Chunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    pending: list = []
    n_pending = 0
    index = 0
    start = 1

    def emit(table) -> _Chunk:
        nonlocal index, start
        chunk = _Chunk(index, table.to_pandas(), np.arange(start, start + table.num_rows), [])
        index += 1
        start += table.num_rows
        return chunk

    for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
        pending.append(batch)
        n_pending += batch.num_rows
        while n_pending >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield emit(table.slice(0, chunk_rows))
            rest = table.slice(chunk_rows)
            pending, n_pending = rest.to_batches(), rest.num_rows
    if n_pending:
        yield emit(pa.Table.from_batches(pending))


def _csv_chunks(path: Path, columns: list[str], chunk_rows: int, id_column: str | None,
                on_bad_rows: str) -> Iterator[_Chunk]:
    """Chunks of a CSV file. Row numbers are 1-based data rows (the header is row 0); a
    malformed line (wrong number of fields) keeps its number, so later rows keep theirs."""
    # Every column is parsed (not only ``columns``): with ``usecols`` the parser would no
    # longer notice lines with too many fields.
    dtype = {id_column: str} if id_column else None
    kwargs = dict(chunksize=chunk_rows, dtype=dtype)
    kwargs["on_bad_lines"] = "warn" if on_bad_rows == "skip" else "error"
    skipped: list[int] = []  # data-row numbers of malformed lines seen so far
    reported = 0
    index = 0
    try:
        reader = pd.read_csv(path, **kwargs)
        with reader:
            while True:
                # Only the parser's own warnings are collected (per read, never across a yield).
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    try:
                        frame = next(reader)
                    except StopIteration:
                        frame = None
                for w in caught:
                    found = [m for m in map(_BAD_LINE.search, str(w.message).splitlines()) if m]
                    if issubclass(w.category, pd.errors.ParserWarning) and found:
                        skipped.extend(int(m.group(1)) - 1 for m in found)
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                skipped.sort()
                if frame is None:
                    break
                rows = frame.index.to_numpy(dtype=np.int64) + 1
                for s in skipped:
                    rows = rows + (rows >= s)
                last = int(rows[-1]) if len(rows) else 0
                new_bad = [s for s in skipped[reported:] if s <= last]
                reported += len(new_bad)
                yield _Chunk(index, frame[columns].reset_index(drop=True), rows, new_bad)
                index += 1
        if skipped[reported:]:
            # malformed lines after the last good row: an empty chunk carries their count
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            yield _Chunk(index, empty, np.empty(0, dtype=np.int64), skipped[reported:])
    except pd.errors.ParserError as exc:
        m = _PARSER_ERR.search(str(exc))
        if m:
            expected, line, saw = (int(g) for g in m.groups())
            raise ValueError(f"{str(path)!r}: row {line - 1} (line {line}) is malformed: expected {expected} "
                             f"fields, saw {saw}. Fix the file or skip such rows (on_bad_rows='skip', "
                             "--on-bad-rows skip)") from exc
        raise ValueError(f"{str(path)!r}: cannot parse the CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(path)!r}: not valid UTF-8 text: {exc}") from exc


# ---------------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=1, default=str)


class OutputError(OSError, ValueError):
    """The output cannot be written: another job holds its lock, the disk is full, the
    directory is read-only or not ours. An ``OSError`` (``errno`` set when known) that is
    also a ``ValueError``, so the command line prints its one-line message (exit code 2).
    Whatever the cause, no partial file is left behind and a previous output is untouched."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@contextlib.contextmanager
def _writing(what: str, path: Path, hint: str = "") -> Iterator[None]:
    """Turn an OSError raised while writing ``what`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        code = errno.errorcode.get(exc.errno or -1)
        raise OutputError(f"cannot write {what} {str(path)!r}: {reason}" + (f" [{code}]" if code else "") + hint,
                          exc.errno) from exc


@contextlib.contextmanager
def _output_lock(out_path: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<output>.lock`` for the whole job; refuse at once
    when another job holds it. The lock dies with the process (no stale lock after a
    crash); the file is removed on exit, and a job that locked a file just removed by the
    previous holder (a different inode than the path's) locks the new one instead."""
    import fcntl

    lock = out_path.with_name(out_path.name + ".lock")
    while True:
        with _writing("the lock file", lock):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                holder = ""
                with contextlib.suppress(OSError, ValueError):
                    holder = f" (pid {int(lock.read_text(encoding='ascii').strip())})"
                raise OutputError(f"--output {str(out_path)!r} is being written by another scoring job{holder}: "
                                  f"it holds the lock {str(lock)!r}. Wait for it to finish or choose another "
                                  "--output", exc.errno) from exc
            raise OutputError(f"cannot lock {str(lock)!r} for --output {str(out_path)!r}: {exc.strerror or exc}",
                              exc.errno) from exc
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        with contextlib.suppress(OSError):  # who holds it, for the message of a refused job
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _content_hash(files: list[Path], names: list[str] | None = None) -> str:
    """SHA-256 of the files' bytes (and names, when given), read in 1 MiB blocks. Resume
    trusts this, not sizes and modification times: an edit in place with its time restored
    changes it. About 0.6 s per GB from the page cache (a small share of scoring the same
    bytes); SHA-256 was faster than BLAKE2b here (CPU SHA instructions)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    for i, path in enumerate(files):
        if names is not None:
            h.update(f"{len(names[i])}:{names[i]}".encode())
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
    return h.hexdigest()


def _write_part(path: Path, scores: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(scores, preserve_index=False).replace_schema_metadata(None)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit_part(work: Path, k: int, scores: pd.DataFrame, report: ScoreReport, rows: tuple[int, int]) -> None:
    """Write chunk ``k``'s scores, then commit them with its metadata: the report, the
    chunk number and the first and last input row it covers (checked on reuse)."""
    part, meta = _part_paths(work, k)
    hint = f"; the output was not changed (rerun with --resume to reuse the chunks scored in {str(work)!r})"
    with _writing("scores to", part, hint):
        _write_part(part, scores)
        _write_json_atomic(meta, {**report.to_dict(), "chunk": k, "rows": list(rows)})


def _reuse_part(work: Path, k: int, rows: tuple[int, int], n_read: int) -> ScoreReport | None:
    """The report of a committed chunk ``k`` when its metadata covers exactly the input rows
    ``rows`` (first, last), ``n_read`` of them, and its part holds the rows it claims to;
    None otherwise (the chunk is scored again)."""
    import pyarrow.parquet as pq

    part, meta = _part_paths(work, k)
    if not (meta.is_file() and part.is_file()):
        return None
    try:
        with open(meta, encoding="utf-8") as fh:
            d = json.load(fh)
        report = ScoreReport.from_dict(d)
        ok = (d.get("chunk") == k and d.get("rows") == list(rows) and report.rows_read == n_read
              and pq.ParquetFile(part).metadata.num_rows == report.rows_scored)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:  # unreadable: score again
        log.warning("%s: chunk %d is unreadable (%s); scoring it again", work, k, exc)
        return None
    if not ok:
        log.warning("%s: chunk %d does not match its metadata (rows %s); scoring it again", work, k, list(rows))
        return None
    return report


def _assemble(work: Path, n_parts: int, out_path: Path, out_format: str, out_dir: Path) -> None:
    """Concatenate the parts into a uniquely named temporary file next to the output and
    rename it onto the output; on any failure the temporary file is removed (the parts
    stay, for --resume)."""
    hint = (f"; the output was not changed (rerun with --resume to reuse the {n_parts} chunk(s) scored in "
            f"{str(work)!r})")
    with _writing("the output", out_path, hint):
        fd, name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        tmp = Path(name)
        try:
            _concat_parts([_part_paths(work, k)[0] for k in range(n_parts)], tmp, out_format)
            os.replace(tmp, out_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(out_dir)
    shutil.rmtree(work, ignore_errors=True)


def _concat_parts(parts: list[Path], tmp: Path, out_format: str) -> None:
    """Concatenate the part files into ``tmp`` one part at a time (bounded memory)."""
    import pyarrow.parquet as pq

    if out_format == "parquet":
        writer = None
        try:
            for part in parts:
                table = pq.read_table(part)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(tmp, schema)
                elif table.schema != schema:
                    table = table.cast(schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    else:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for i, part in enumerate(parts):
                pq.read_table(part).to_pandas().to_csv(fh, header=i == 0, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


def _part_paths(work: Path, k: int) -> tuple[Path, Path]:
    return work / f"part-{k:06d}.parquet", work / f"part-{k:06d}.json"


def _progress(total: int | None, enabled: bool | None, desc: str):
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled  # None: on only when stderr is a terminal
    return tqdm(total=total, unit="rows", desc=desc, disable=disable, leave=False, dynamic_ncols=True)


def score_file(model, input: str | os.PathLike, output: str | os.PathLike, *, id_column: str | None = None,
               chunk_rows: int = 50_000, resume: bool = False, extra_columns: str = "drop",
               on_bad_rows: str = "error", unseen: str = "score", input_format: str | None = None,
               output_format: str | None = None, progress: bool | None = None,
               threshold: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a CSV/Parquet file in chunks and write the scores atomically.

    Parameters
    ----------
    model : fitted model, model directory or MLflow model URI
        See :func:`load_model`.
    input : path
        ``.csv`` (also compressed, e.g. ``.csv.gz``) or ``.parquet``/``.pq``.
    output : path
        ``.csv`` or ``.parquet``; written whole or not at all.
    id_column : str, optional
        Input column copied to the output (first column).
    chunk_rows : int, default=50000
        Rows per chunk: bounds memory and is the unit of resumption.
    resume : bool, default=False
        Reuse the committed chunks of an interrupted run (see the module docstring).
    extra_columns, on_bad_rows, unseen : str
        Bad-input policies (see :func:`score_frame`). Malformed CSV lines (too many
        fields) follow ``on_bad_rows``; a line with too few fields has missing values,
        which the model's imputers fill.
    input_format, output_format : {"csv", "parquet"}, optional
        Default: from the file suffix.
    progress : bool, optional
        Progress bar; None: only when stderr is a terminal.
    threshold : dict, optional
        A threshold for this job's labels, as the detector's ``set_threshold`` takes it
        (``{"contamination": 0.01}``, ``{"fpr": 0.001}`` or ``{"score": -3.0}``); the saved
        model is not changed. It is part of the model fingerprint: a resume with another
        threshold starts over.

    Returns
    -------
    dict
        ``output``, ``rows_read``, ``rows_scored``, ``n_skipped``, ``skipped_rows``,
        ``bad_values``, ``malformed_rows``, ``unseen_categories``, ``unseen_examples``,
        ``extra_columns``, ``chunks``, ``chunks_reused``, ``seconds``, ``rows_per_s``, ``model_id``.

    Raises
    ------
    FileNotFoundError
        No input file or model.
    ValueError
        Bad arguments or bad input; the message names the column and rows. No output is written.
    OutputError
        Another job holds the output's lock, or writing failed (disk full, read-only or not
        permitted): no temporary file is left and the previous output is untouched.
    """
    start_time = time.perf_counter()
    _check_policy("extra_columns", extra_columns, _EXTRA_POLICIES)
    _check_policy("on_bad_rows", on_bad_rows, _BAD_ROW_POLICIES)
    _check_policy("unseen", unseen, _UNSEEN_POLICIES)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    chunk_rows = int(chunk_rows)
    in_path = Path(input)
    out_path = Path(output)
    if threshold:
        model = _with_threshold(model, threshold)
    if in_path.is_dir() or (in_path.is_file() and in_path.suffix.lower() in (".npy", ".npz")):
        out_format, out_dir = _check_output(out_path, output_format)
        with _output_lock(out_path):
            return _score_image_source(model, in_path, out_path, out_format, out_dir, chunk_rows=chunk_rows,
                                       resume=resume, progress=progress, start_time=start_time)
    if not in_path.is_file():
        raise FileNotFoundError(f"--input: no such file or folder {str(in_path)!r}")
    in_format = file_format(in_path, input_format)
    if out_path.exists() and out_path.resolve() == in_path.resolve():
        raise ValueError(f"--output {str(out_path)!r} is the input file")
    out_format, out_dir = _check_output(out_path, output_format)
    with _output_lock(out_path):
        return _score_table_file(model, in_path, in_format, out_path, out_format, out_dir, id_column=id_column,
                                 chunk_rows=chunk_rows, resume=resume, extra_columns=extra_columns,
                                 on_bad_rows=on_bad_rows, unseen=unseen, progress=progress, start_time=start_time)


def _score_table_file(model, in_path: Path, in_format: str, out_path: Path, out_format: str, out_dir: Path, *,
                      id_column: str | None, chunk_rows: int, resume: bool, extra_columns: str, on_bad_rows: str,
                      unseen: str, progress: bool | None, start_time: float) -> dict[str, Any]:
    """:func:`score_file` for a table, under the output's lock."""
    model, model_id = load_model(model)
    schema = model_schema(model)
    where = str(in_path)
    if in_path.stat().st_size == 0:
        raise ValueError(f"{where} is empty")
    columns, n_total = _input_columns(in_path, in_format)
    extra = _check_columns(columns, schema, id_column, extra_columns, where)
    if extra:
        log.warning("%s: ignoring column(s) the model does not use: %s", where, extra)
    needed = (list(schema.columns) if schema.named else [c for c in columns if c != id_column])
    needed = needed + ([id_column] if id_column else [])
    if n_total == 0:
        raise ValueError(f"{where} has no data rows")

    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "input": str(in_path.resolve()),
                "input_size": in_path.stat().st_size, "input_sha256": _content_hash([in_path]),
                "chunk_rows": chunk_rows, "id_column": id_column, "columns": needed, "on_bad_rows": on_bad_rows,
                "unseen": unseen, "model_id": model_id}
    work = out_dir / f"{out_path.name}.parts"
    _prepare_workdir(work, manifest, resume)

    if in_format == "parquet":
        chunks = _parquet_chunks(in_path, needed, chunk_rows)
    else:
        chunks = _csv_chunks(in_path, needed, chunk_rows, id_column, on_bad_rows)
    total = ScoreReport()
    n_chunks = 0
    reused = 0
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    bar = _progress(n_total, progress, f"scoring {in_path.name}")
    try:
        for chunk in chunks:
            n_chunks += 1
            numbers = np.concatenate([chunk.rows, np.asarray(chunk.malformed, dtype=np.int64)])
            span = (int(numbers.min()), int(numbers.max())) if len(numbers) else (0, -1)
            report = _reuse_part(work, chunk.index, span, len(numbers)) if resume else None
            if report is not None:
                reused += 1
            else:
                scores, report = score_frame(model, chunk.frame, id_column=id_column, extra_columns=extra_columns,
                                             on_bad_rows=on_bad_rows, unseen=unseen, row_numbers=chunk.rows,
                                             where=where, schema=schema, _checked=True)
                if chunk.malformed:
                    report.malformed_rows = len(chunk.malformed)
                    report.rows_read += len(chunk.malformed)
                    report.n_skipped += len(chunk.malformed)
                    report.skipped_rows = sorted(report.skipped_rows + chunk.malformed)[:_MAX_LISTED_ROWS]
                _commit_part(work, chunk.index, scores, report, span)
                if throttle > 0:
                    time.sleep(throttle)
            total.add(report)
            bar.update(len(chunk.frame))
    finally:
        bar.close()
    if total.rows_read == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{where} has no data rows")
    if total.rows_scored == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{where}: none of its {total.rows_read} rows could be scored "
                         f"(skipped rows: {format_rows(total.skipped_rows)})")
    _assemble(work, n_chunks, out_path, out_format, out_dir)

    if total.n_skipped:
        log.warning("%s: skipped %d row(s): %s", where, total.n_skipped, format_rows(total.skipped_rows))
    for col, count in total.unseen_categories.items():
        log.warning("%s: %d row(s) have categories of %r not seen in training (scored as unknown), e.g. "
                    "[row, value]: %s", where, count, col, total.unseen_examples.get(col))
    stats = _finish(total, out_path, n_chunks, reused, model_id, start_time)
    stats["extra_columns"] = extra
    return stats


def _finish(total: ScoreReport, out_path: Path, n_chunks: int, reused: int, model_id: str,
            start_time: float) -> dict[str, Any]:
    seconds = time.perf_counter() - start_time
    stats = total.to_dict()
    stats.update({"output": str(out_path), "chunks": n_chunks, "chunks_reused": reused, "seconds": seconds,
                  "rows_per_s": total.rows_scored / seconds if seconds > 0 else float("nan"), "model_id": model_id})
    return stats


def _check_output(out_path: Path, output_format: str | None) -> tuple[str, Path]:
    """The output's format and directory; refuses a missing directory or a directory path."""
    out_format = file_format(out_path, output_format)
    out_dir = out_path.parent if str(out_path.parent) else Path(".")
    if not out_dir.is_dir():
        raise ValueError(f"--output: directory {str(out_dir)!r} does not exist")
    if out_path.is_dir():
        raise ValueError(f"--output {str(out_path)!r} is a directory")
    return out_format, out_dir


# Decoded images held at once by a folder-scoring job (bytes of float64 pixels).
IMAGE_CHUNK_BYTES = 64 * 2**20


def _score_image_source(model, in_path: Path, out_path: Path, out_format: str, out_dir: Path, *, chunk_rows: int,
                        resume: bool, progress: bool | None, start_time: float) -> dict[str, Any]:
    """Score a folder of image files (or a ``.npy``/``.npz`` array) with an image model: the
    table schema (``file``, the components, ``score``, ``label``), ``chunk_rows`` files read
    at a time, at most :data:`IMAGE_CHUNK_BYTES` of decoded pixels (memory bounded by one
    chunk of images; an array file is read whole), parts committed per chunk so an
    interrupted run resumes, the output written whole or not at all."""
    from gananomaly.pipelines.image import _list_images, load_image_files, load_image_source
    from sklearn.pipeline import Pipeline

    model, model_id = load_model(model)
    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    shape = getattr(det, "image_shape_", None)
    if shape is None:
        raise ValueError(f"--input {str(in_path)!r} holds images, but the model was fitted on a table: "
                         "pass a CSV or Parquet file")
    mode = "grey" if shape[0] == 1 else "rgb"
    # A chunk of decoded images (float64) stays within IMAGE_CHUNK_BYTES, whatever --chunk-rows says.
    chunk_rows = int(min(chunk_rows, max(1, IMAGE_CHUNK_BYTES // (8 * int(np.prod(shape))))))
    if in_path.is_dir():
        files = _list_images(in_path)
        if not files:
            raise ValueError(f"--input: no image files in folder {str(in_path)!r}")
        names = [str(f.relative_to(in_path)) for f in files]
        chunks = [files[k : k + chunk_rows] for k in range(0, len(files), chunk_rows)]
        array = None
        content = _content_hash(files, names)
    else:
        data = load_image_source(in_path, split="test" if in_path.suffix.lower() == ".npz" else "train")
        if data is None or len(data.names) == 0:
            raise ValueError(f"--input: no images in {str(in_path)!r}")
        names, array = data.names, data
        chunks = [list(range(k, min(k + chunk_rows, len(names)))) for k in range(0, len(names), chunk_rows)]
        content = _content_hash([in_path])
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "input": str(in_path.resolve()),
                "input_files": hashlib.sha256("\n".join(names).encode()).hexdigest(), "n_images": len(names),
                "input_sha256": content, "chunk_rows": chunk_rows, "model_id": model_id}
    work = out_dir / f"{out_path.name}.parts"
    _prepare_workdir(work, manifest, resume)
    total, reused = ScoreReport(), 0
    bar = _progress(len(names), progress, f"scoring {in_path.name}")
    try:
        for k, chunk in enumerate(chunks):
            span = (k * chunk_rows + 1, k * chunk_rows + len(chunk))
            report = _reuse_part(work, k, span, len(chunk)) if resume else None
            if report is not None:
                reused += 1
            else:
                if array is None:
                    data = load_image_files(chunk, mode=mode, size=shape[1:], on_error="skip", root=in_path)
                    images, chunk_names, skipped = data.images, data.names, data.skipped
                else:
                    images, chunk_names, skipped = array.images[chunk], [names[i] for i in chunk], []
                if len(chunk_names):
                    scores = score_prepared(model, images)
                else:
                    scores = score_prepared(model, np.empty((0,) + tuple(shape)))
                nonfinite = ~np.isfinite(scores.drop(columns="label").to_numpy(dtype=np.float64)).all(axis=1)
                if nonfinite.any():
                    raise ValueError(f"{in_path}: the model's scores are not finite for "
                                     f"{[chunk_names[i] for i in np.flatnonzero(nonfinite)[:5]]}")
                scores.insert(0, "file", pd.Series(chunk_names, dtype=object))
                report = ScoreReport(rows_read=len(chunk), rows_scored=len(chunk_names), n_skipped=len(skipped))
                for name, reason in skipped:
                    log.warning("%s: skipped %s (%s)", in_path, name, reason)
                _commit_part(work, k, scores, report, span)
            total.add(report)
            bar.update(len(chunk))
    finally:
        bar.close()
    if total.rows_scored == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{in_path}: none of its {total.rows_read} images could be read")
    _assemble(work, len(chunks), out_path, out_format, out_dir)
    return _finish(total, out_path, len(chunks), reused, model_id, start_time)


# A run under the "error" policy only committed chunks without such rows, so its chunks
# are what the lenient policy would have written too; the reverse is not true.
_LENIENT_RESUME = {"on_bad_rows": "error", "unseen": "error"}


def _prepare_workdir(work: Path, manifest: dict[str, Any], resume: bool) -> None:
    """Start (or, with ``resume`` and a matching manifest, continue) the work directory.
    Without ``resume`` the parts of an earlier run are discarded: only ``--resume`` reuses
    anything, and only for the same input content, chunking, policies and model."""
    mpath = work / MANIFEST_NAME
    if work.exists():
        if resume:
            try:
                with open(mpath, encoding="utf-8") as fh:
                    old = json.load(fh)
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"cannot resume: {str(mpath)!r} is missing or corrupt ({exc}); "
                                 f"remove {str(work)!r} or run without --resume") from exc
            diffs = [k for k in manifest if old.get(k) != manifest[k] and old.get(k) != _LENIENT_RESUME.get(k, ...)]
            if diffs:
                detail = "; ".join(_difference(k, old.get(k), manifest[k]) for k in diffs if k != "model_id")
                detail = "; ".join(filter(None, [detail, "the model changed" if "model_id" in diffs else ""]))
                raise ValueError(f"cannot resume from {str(work)!r}: the interrupted run differs ({detail}); "
                                 "run without --resume to start over")
            if old != manifest:  # a lenient policy now: later resumes must not take its chunks for strict ones
                with _writing("the manifest", mpath):
                    _write_json_atomic(mpath, manifest)
            done = len(list(work.glob("part-*.json")))
            log.info("resuming from %s: %d chunk(s) already scored", work, done)
            return
        log.warning("discarding the work directory of an earlier interrupted run: %s (use --resume to continue it)",
                    work)
        shutil.rmtree(work)
    elif resume:
        log.info("nothing to resume at %s; scoring the whole input", work)
    with _writing("the work directory", work):
        work.mkdir()
        try:
            _write_json_atomic(mpath, manifest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def _difference(key: str, then: Any, now: Any) -> str:
    if key == "input_sha256":
        return f"the input's content changed (SHA-256 {str(then)[:12]}... then, {str(now)[:12]}... now)"
    return f"{key}: {then!r} then, {now!r} now"


# ---------------------------------------------------------------------------------- benchmark
def _rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _benchmark_child(model_dir: str, input_path: str, output_path: str, chunk_rows: int) -> None:
    """Run inside a fresh interpreter: load, score, print JSON with timings and memory."""
    import gananomaly  # noqa: F401 - import cost is not part of the measured job

    model, _ = load_model(model_dir)
    base = _current_rss_mb()
    start = time.perf_counter()
    stats = score_file(model, input_path, output_path, chunk_rows=chunk_rows, id_column="row_id", progress=False)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows_scored": stats["rows_scored"], "peak_rss_mb": _rss_mb(),
                      "baseline_rss_mb": base}))


def benchmark_batch_score(n_rows: int, *, n_features: int = 20, n_categorical: int = 2, chunk_rows: int = 50_000,
                          input_format: str = "parquet", epochs: int = 3, workdir: str | os.PathLike | None = None,
                          random_state: int = 0) -> dict[str, Any]:
    """Throughput and peak memory of :func:`score_file` on a generated file.

    Fits a small tabular pipeline (``epochs`` epochs on 2,000 rows), writes ``n_rows``
    rows of ``n_features`` numeric and ``n_categorical`` categorical columns (plus an ID)
    to ``input_format`` in blocks, then scores the file in a fresh Python process and
    reads that process's peak resident memory, so the number is the job's own.

    Parameters
    ----------
    n_rows : int
    n_features : int, default=20
    n_categorical : int, default=2
    chunk_rows : int, default=50000
    input_format : {"parquet", "csv"}, default="parquet"
    epochs : int, default=3
    workdir : path, optional
        Where the input, model and output go (default: a temporary directory, removed).
    random_state : int, default=0

    Returns
    -------
    dict
        ``rows_per_s``, ``peak_rss_mb``, ``baseline_rss_mb`` (after loading the model,
        before scoring), ``seconds``, ``n_rows``, ``chunk_rows``, ``input_format``, ``input_mb``.
    """
    import subprocess

    from gananomaly.pipelines.tabular import TabularConfig, build_pipeline, prepare_frame

    if input_format not in ("parquet", "csv"):
        raise ValueError(f"input_format must be 'parquet' or 'csv', got {input_format!r}")
    if not isinstance(n_rows, int) or n_rows < 1:
        raise ValueError(f"n_rows must be a positive int, got {n_rows!r}")
    rng = np.random.RandomState(random_state)
    cats = ["a", "b", "c", "d"]

    def block(n: int, offset: int) -> pd.DataFrame:
        data: dict[str, Any] = {"row_id": np.arange(offset, offset + n)}
        for j in range(n_features):
            data[f"x{j}"] = rng.randn(n)
        for j in range(n_categorical):
            data[f"c{j}"] = rng.choice(cats, size=n)
        return pd.DataFrame(data)

    ctx = tempfile.TemporaryDirectory(prefix="gananomaly-bench-") if workdir is None else contextlib.nullcontext(
        str(workdir))
    with ctx as root:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        train = block(2000, 0)
        cfg = TabularConfig(name="bench", builtin="mixed", id_columns=["row_id"], mlflow=False,
                            detector={"epochs": epochs, "random_state": random_state, "device": "cpu"})
        pipe = build_pipeline(cfg, train)
        X, _, _ = prepare_frame(train, _schema_from_frame(cfg, train))
        pipe.fit(X)
        from gananomaly.persistence import save

        model_dir = root / "model"
        save(pipe, model_dir)
        input_path = root / f"input.{input_format}"
        _write_generated(input_path, input_format, n_rows, block)
        output_path = root / "scores.parquet"
        code = ("import sys; from gananomaly.pipelines.batch_score import _benchmark_child; "
                "_benchmark_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))")
        env = dict(os.environ)
        env.pop(THROTTLE_ENV, None)
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-c", code, str(model_dir), str(input_path), str(output_path),
                               str(chunk_rows)], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark scoring process failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        input_mb = input_path.stat().st_size / 2**20
    return {"rows_per_s": result["rows_scored"] / result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
            "baseline_rss_mb": result["baseline_rss_mb"], "seconds": result["seconds"], "n_rows": n_rows,
            "chunk_rows": chunk_rows, "input_format": input_format, "input_mb": input_mb}


def _schema_from_frame(config, df: pd.DataFrame) -> ModelSchema:
    from gananomaly.pipelines.tabular import infer_columns

    return ModelSchema(*infer_columns(config, df))


def _write_generated(path: Path, fmt: str, n_rows: int, block, block_rows: int = 100_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    with open(path, "w", encoding="utf-8", newline="") if fmt == "csv" else contextlib.nullcontext() as fh:
        for i, offset in enumerate(range(0, n_rows, block_rows)):
            df = block(min(block_rows, n_rows - offset), offset)
            if fmt == "csv":
                df.to_csv(fh, header=i == 0, index=False)
            else:
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
    if writer is not None:
        writer.close()


# ---------------------------------------------------------------------------------- CLI
def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``gananomaly score`` and ``gananomaly tabular score``."""
    parser.add_argument("--model", required=True,
                        help="model directory (gananomaly save) or MLflow model URI (runs:/..., models:/...)")
    parser.add_argument("--input", required=True,
                        help="input .csv or .parquet file; for an image model a folder of image files, .npy or .npz")
    parser.add_argument("--output", required=True, help="output .csv or .parquet file (written atomically)")
    parser.add_argument("--id-column", default=None, help="input column copied to the output")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk (memory bound, resume unit)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its finished chunks")
    parser.add_argument("--on-bad-rows", choices=_BAD_ROW_POLICIES, default="error",
                        help="rows with unparseable numbers, values too large to score or malformed CSV lines: "
                             "error (default) or skip")
    parser.add_argument("--extra-columns", choices=_EXTRA_POLICIES, default="drop",
                        help="input columns the model does not use: drop with a warning (default) or error")
    parser.add_argument("--unseen", choices=_UNSEEN_POLICIES, default="score",
                        help="categories not seen in training: score them as unknown (default) or error")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--contamination", default=None,
                       help="label this share of the training rows' score distribution as outliers ('auto' or a "
                            "float in (0, 0.5]) instead of the model's threshold")
    group.add_argument("--fpr", type=float, default=None,
                       help="label as outliers scores below the training rows' FPR quantile (a float in (0, 1))")
    group.add_argument("--threshold", type=float, default=None,
                       help="label as outliers rows whose score is below this value")


def _threshold_arg(args: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(args, "contamination", None) is not None:
        value = args.contamination
        try:
            value = value if value == "auto" else float(value)
        except ValueError:
            raise ValueError(f"--contamination must be 'auto' or a number, got {value!r}") from None
        return {"contamination": value}
    if getattr(args, "fpr", None) is not None:
        return {"fpr": args.fpr}
    if getattr(args, "threshold", None) is not None:
        return {"score": args.threshold}
    return None


def run_score_command(args: argparse.Namespace) -> int:
    """Run ``score_file`` from parsed arguments and print a one-line summary."""
    stats = score_file(args.model, args.input, args.output, id_column=args.id_column, chunk_rows=args.chunk_rows,
                       resume=args.resume, extra_columns=args.extra_columns, on_bad_rows=args.on_bad_rows,
                       unseen=args.unseen, progress=False if args.no_progress else None,
                       threshold=_threshold_arg(args))
    line = (f"scored {stats['rows_scored']} of {stats['rows_read']} rows in {stats['seconds']:.1f} s "
            f"({stats['rows_per_s']:.0f} rows/s) -> {stats['output']}")
    if stats["chunks_reused"]:
        line += f"; resumed {stats['chunks_reused']} of {stats['chunks']} chunks"
    print(line)
    if stats["n_skipped"]:
        print(f"skipped {stats['n_skipped']} row(s): {format_rows(stats['skipped_rows'])}")
    for col, count in stats["unseen_categories"].items():
        print(f"{count} row(s) with unseen categories in column {col!r}")
    return 0


def register_cli(subparsers) -> None:
    """Add ``gananomaly score``."""
    score = subparsers.add_parser("score", help="stream a CSV/Parquet file through a fitted model, atomically")
    add_score_arguments(score)
    score.set_defaults(func=run_score_command)
