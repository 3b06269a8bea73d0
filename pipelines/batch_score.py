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

Values too large to score, unseen categories, extra columns: see
:mod:`gananomaly.pipelines.frame_scoring` (the same rules as scoring a DataFrame).

The pieces live in the modules below this one: reading chunks
(:mod:`~gananomaly.pipelines.batch_read`), scoring a chunk
(:mod:`~gananomaly.pipelines.frame_scoring`), the job's files
(:mod:`~gananomaly.pipelines.batch_files`), images
(:mod:`~gananomaly.pipelines.batch_images`); their public names are re-exported here.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines.batch_files import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    OutputError,
    assemble,
    check_output,
    commit_part,
    content_hash,
    discard_unused_workdir,
    job_stats,
    output_lock,
    prepare_workdir,
    reuse_part,
)
from gananomaly.pipelines.batch_images import image_shape, score_image_source
from gananomaly.pipelines.batch_read import (
    Chunk,
    csv_chunks,
    file_columns,
    parquet_chunks,
    progress_bar,
    progress_total,
)
from gananomaly.pipelines.csv_input import NotUTF8Error
from gananomaly.pipelines.frame_scoring import (
    BAD_ROW_POLICIES,
    EXTRA_POLICIES,
    MAX_LISTED_ROWS,
    MAX_STANDARDISED,
    SCORE_COLUMNS,
    UNSEEN_POLICIES,
    ScoreReport,
    check_columns,
    check_policy,
    score_frame,
    score_prepared,
)
from gananomaly.pipelines.model_loading import load_model, model_fingerprint, with_threshold
from gananomaly.pipelines.table_data import file_format, format_rows, model_schema

from gananomaly.explanations import input_columns

__all__ = [
    "SCORE_COLUMNS",
    "MAX_STANDARDISED",
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "THROTTLE_ENV",
    "IMAGE_CHUNK_BYTES",
    "OutputError",
    "ScoreReport",
    "load_model",
    "model_fingerprint",
    "score_prepared",
    "score_frame",
    "score_file",
    "file_format",
]

log = logging.getLogger(__name__)

#: Seconds to sleep after each committed chunk (to share a busy machine; also lets a
#: supervisor interrupt a job at a chunk boundary).
THROTTLE_ENV = "GANANOMALY_BATCH_THROTTLE_S"
#: ``in_format`` of a 2-D ``.npy``/``.npz`` array scored by a table model.
ARRAY_FORMAT = "array"
#: Decoded images held at once by a folder-scoring job (bytes of float64 pixels).
IMAGE_CHUNK_BYTES = 64 * 2**20


def score_file(model, input: str | os.PathLike, output: str | os.PathLike, *, id_column: str | None = None,
               chunk_rows: int = 50_000, resume: bool = False, extra_columns: str = "drop",
               on_bad_rows: str | None = None, unseen: str = "score", input_format: str | None = None,
               output_format: str | None = None, progress: bool | None = None,
               threshold: dict[str, Any] | None = None, explain: int = 0,
               ignore_columns: Sequence[str] = ()) -> dict[str, Any]:
    """Score a CSV/Parquet file in chunks and write the scores atomically.

    Parameters
    ----------
    model : fitted model, model directory or MLflow model URI
        See :func:`load_model`.
    input : path
        ``.csv`` (also compressed, e.g. ``.csv.gz``) or ``.parquet``/``.pq``; for a model
        fitted on an unnamed array also a 2-D ``.npy``/``.npz`` array (an ``.npz``: its first
        array), read whole; for an image model a folder of images, ``.npy`` or ``.npz``.
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
        which the model's imputers fill. ``on_bad_rows`` None: ``"error"`` for a table,
        ``"skip"`` for a folder of images (an unreadable file is named and skipped;
        ``"error"`` stops at the first one, naming it).
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
    _check_arguments(extra_columns, on_bad_rows, unseen, chunk_rows, explain)
    is_images = Path(input).is_dir()
    on_bad_rows = on_bad_rows or ("skip" if is_images else "error")
    chunk_rows = int(chunk_rows)
    in_path = Path(input)
    out_path = Path(output)
    if threshold:
        model = with_threshold(model, threshold)
    table = {"id_column": id_column, "chunk_rows": chunk_rows, "resume": resume, "extra_columns": extra_columns,
             "on_bad_rows": on_bad_rows, "unseen": unseen, "progress": progress, "start_time": start_time,
             "explain": int(explain), "ignore": tuple(ignore_columns)}
    is_array = in_path.is_file() and in_path.suffix.lower() in (".npy", ".npz")
    if in_path.is_dir() or is_array:
        out_format, out_dir = check_output(out_path, output_format)
        with output_lock(out_path):
            return _score_images_or_array(model, in_path, out_path, out_format, out_dir, table)
    if not in_path.is_file():
        raise FileNotFoundError(f"--input: no such file or folder {str(in_path)!r}")
    in_format = file_format(in_path, input_format)
    if out_path.exists() and out_path.resolve() == in_path.resolve():
        raise ValueError(f"--output {str(out_path)!r} is the input file")
    out_format, out_dir = check_output(out_path, output_format)
    with output_lock(out_path):
        return _score_table_file(model, in_path, in_format, out_path, out_format, out_dir, **table)


def _score_images_or_array(model, in_path: Path, out_path: Path, out_format: str, out_dir: Path,
                           table: dict[str, Any]) -> dict[str, Any]:
    """:func:`score_file` for a folder or an array file, under the output's lock: images for
    an image model; a 2-D array is a table for a table model."""
    model, model_id = load_model(model)
    if in_path.is_file() and image_shape(model) is None:
        return _score_table_file(model, in_path, ARRAY_FORMAT, out_path, out_format, out_dir, model_id=model_id,
                                 **table)
    if table["explain"]:
        raise ValueError("explain (--explain) is for tables; an image's explanation is its anomaly map")
    if table["id_column"] is not None:
        raise ValueError(f"--id-column {table['id_column']!r} is for tables; an image's row is named by its file "
                         "(the file column)")
    # policies for table columns: a non-default choice would be ignored for images, so it is refused
    for key, option, default in (("extra_columns", "--extra-columns", "drop"), ("unseen", "--unseen", "score")):
        if table[key] != default:
            raise ValueError(f"{option} {table[key]} is for tables (columns the model does not use, categories "
                             "unseen in training); an image has neither")
    return score_image_source(model, in_path, out_path, out_format, out_dir, chunk_rows=table["chunk_rows"],
                              chunk_bytes=IMAGE_CHUNK_BYTES, resume=table["resume"], progress=table["progress"],
                              start_time=table["start_time"], model_id=model_id, on_bad_rows=table["on_bad_rows"])


def _check_arguments(extra_columns: str, on_bad_rows: str | None, unseen: str, chunk_rows: Any, explain: Any
                     ) -> None:
    check_policy("extra_columns", extra_columns, EXTRA_POLICIES)
    if on_bad_rows is not None:
        check_policy("on_bad_rows", on_bad_rows, BAD_ROW_POLICIES)
    check_policy("unseen", unseen, UNSEEN_POLICIES)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}")
    if isinstance(explain, bool) or not isinstance(explain, (int, np.integer)) or explain < 0:
        raise ValueError(f"explain (--explain) must be an int >= 0, got {explain!r}")


def _score_table_file(model, in_path: Path, in_format: str, out_path: Path, out_format: str, out_dir: Path, *,
                      id_column: str | None, chunk_rows: int, resume: bool, extra_columns: str, on_bad_rows: str,
                      unseen: str, progress: bool | None, start_time: float, explain: int,
                      ignore: tuple[str, ...], model_id: str | None = None) -> dict[str, Any]:
    """:func:`score_file` for a table (a CSV or Parquet file, or a 2-D array file:
    ``in_format`` :data:`ARRAY_FORMAT`), under the output's lock. ``model_id`` given:
    ``model`` is already loaded and that is its fingerprint."""
    if model_id is None:
        model, model_id = load_model(model)
    schema = model_schema(model)
    n_columns = len(input_columns(model))
    if explain > n_columns:
        raise ValueError(f"explain (--explain) is {explain}, but the model has only {n_columns} input columns")
    where = str(in_path)
    if in_format == ARRAY_FORMAT:
        array = _array_table(in_path, schema, id_column)
        needed, n_total, extra = list(schema.columns), len(array), []
    else:
        needed, n_total, extra = _input_plan(in_path, in_format, schema, id_column, extra_columns, ignore, explain)
        if not schema.named:
            log.warning("%s: the model was fitted on an array without column names, so the input's columns are "
                        "taken in their order: %s; reorder them if the model was fitted in another order", where,
                        [c for c in needed if c != id_column and c not in schema.context][:20])
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "input": str(in_path.resolve()),
                "input_size": in_path.stat().st_size, "input_sha256": content_hash([in_path]),
                "chunk_rows": chunk_rows, "id_column": id_column, "columns": needed, "on_bad_rows": on_bad_rows,
                "unseen": unseen, "explain": explain, "model_id": model_id}
    work = out_dir / f"{out_path.name}.parts"
    prepare_workdir(work, manifest, resume)
    if in_format == ARRAY_FORMAT:
        chunks = _array_chunks(array, needed, chunk_rows)
    elif in_format == "parquet":
        chunks = parquet_chunks(in_path, needed, chunk_rows, id_column)
    else:
        chunks = csv_chunks(in_path, needed, chunk_rows, id_column, on_bad_rows, schema.text_columns)
    policies = {"id_column": id_column, "extra_columns": extra_columns, "on_bad_rows": on_bad_rows,
                "unseen": unseen, "explain": explain}
    total_units, unit = progress_total(in_path, "parquet" if in_format == ARRAY_FORMAT else in_format, n_total)
    bar = progress_bar(total_units, progress, f"scoring {in_path.name}", unit)
    try:
        # the library splits a table's rows between threads (one-thread kernels each), which
        # holds up next to busy processes: the caller's thread count is used as it is
        total, n_chunks, reused = _score_chunks(model, schema, chunks, work, where, resume, policies, bar)
    except BaseException as exc:
        # Not UTF-8: no run can resume these chunks (the input has to change before it can be scored).
        if isinstance(exc, NotUTF8Error):
            shutil.rmtree(work, ignore_errors=True)
        discard_unused_workdir(work)
        raise
    finally:
        bar.close()
    if total.rows_read == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{where} has no data rows")
    if total.rows_scored == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{where}: none of its {total.rows_read} rows could be scored "
                         f"(skipped rows: {format_rows(total.skipped_rows)})")
    assemble(work, n_chunks, out_path, out_format, out_dir)
    if total.n_skipped:
        log.warning("%s: skipped %d row(s): %s", where, total.n_skipped, format_rows(total.skipped_rows))
    for col, count in total.unseen_categories.items():
        log.warning("%s: %d row(s) have categories of %r not seen in training (scored as unknown), e.g. "
                    "[row, value]: %s", where, count, col, total.unseen_examples.get(col))
    stats = job_stats(total, out_path, n_chunks, reused, model_id, start_time)
    stats["extra_columns"] = extra
    return stats


def _array_table(in_path: Path, schema, id_column: str | None) -> np.ndarray:
    """The table of a ``.npy``/``.npz`` file (an ``.npz``: its first array, as ``gananomaly
    fit`` reads it) for a model fitted on an unnamed array; refuses images, an array for a
    model fitted on named columns and an ID column (an array has no column names)."""
    where = str(in_path)
    if in_path.suffix.lower() == ".npy":
        array = np.load(in_path, allow_pickle=False)
    else:
        with np.load(in_path, allow_pickle=False) as data:
            if not data.files:
                raise ValueError(f"--input {where!r} holds no arrays")
            array = data[data.files[0]]
    if array.ndim != 2:
        raise ValueError(f"--input {where!r} holds a {array.ndim}-D array (images), but the model was fitted on "
                         "a table: pass a 2-D array (rows x columns), a CSV or a Parquet file")
    if schema.named:
        raise ValueError(f"--input {where!r} is an array without column names, but the model was fitted on named "
                         f"columns {schema.columns[:10]}: pass a CSV or Parquet file")
    if schema.context:
        raise ValueError(f"--input {where!r} is an array without column names, but the model reads each row's context "
                         f"from the column(s) {schema.context}: pass a CSV or Parquet file")
    if id_column is not None:
        raise ValueError(f"--id-column {id_column!r}: --input {where!r} is an array, which has no named columns")
    if len(array) == 0:
        raise ValueError(f"{where} has no data rows")
    return array


def _array_chunks(array: np.ndarray, columns: list[str], chunk_rows: int):
    """Chunks of ``chunk_rows`` rows of a 2-D array, as the readers of files give them
    (1-based row numbers; the columns named like the model's positions)."""
    for index, start in enumerate(range(0, len(array), chunk_rows)):
        rows = array[start : start + chunk_rows]
        yield Chunk(index, pd.DataFrame(rows, columns=columns), np.arange(start + 1, start + len(rows) + 1), [],
                    advance=len(rows))


def _input_plan(in_path: Path, in_format: str, schema, id_column: str | None, extra_columns: str,
                ignore: tuple[str, ...], explain: int) -> tuple[list[str], int | None, list[str]]:
    """(columns to read, Parquet row count, extra columns) of the input, from its header or
    footer; refuses an empty input and one that lacks a column the model needs."""
    where = str(in_path)
    if in_path.stat().st_size == 0:
        raise ValueError(f"{where} is empty")
    columns, n_total = file_columns(in_path, in_format)
    extra = check_columns(columns, schema, id_column, extra_columns, where, ignore, explain)
    if extra:
        log.warning("%s: ignoring column(s) the model does not use: %s", where, extra)
    needed = (schema.required if schema.named else [c for c in columns if c != id_column and c not in ignore])
    needed = needed + ([id_column] if id_column else [])
    if n_total == 0:
        raise ValueError(f"{where} has no data rows")
    return needed, n_total, extra


def _score_chunks(model, schema, chunks, work: Path, where: str, resume: bool, policies: dict[str, Any],
                  bar) -> tuple[ScoreReport, int, int]:
    """Score (or, under ``resume``, reuse) and commit every chunk; (total report, chunks, reused)."""
    total = ScoreReport()
    n_chunks = reused = 0
    throttle = float(os.environ.get(THROTTLE_ENV, "0") or 0)
    for chunk in chunks:
        n_chunks += 1
        numbers = np.concatenate([chunk.rows, np.asarray(chunk.malformed, dtype=np.int64)])
        span = (int(numbers.min()), int(numbers.max())) if len(numbers) else (0, -1)
        report = reuse_part(work, chunk.index, span, len(numbers)) if resume else None
        if report is not None:
            reused += 1
        else:
            scores, report = score_frame(model, chunk.frame, row_numbers=chunk.rows, where=where, schema=schema,
                                         _checked=True, **policies)
            if chunk.malformed:
                report.malformed_rows = len(chunk.malformed)
                report.rows_read += len(chunk.malformed)
                report.n_skipped += len(chunk.malformed)
                report.skipped_rows = sorted(report.skipped_rows + chunk.malformed)[:MAX_LISTED_ROWS]
            commit_part(work, chunk.index, scores, report, span)
            if throttle > 0:
                time.sleep(throttle)
        total.add(report)
        bar.update(chunk.advance)
    if bar.total is not None and bar.n < bar.total:
        bar.update(bar.total - bar.n)  # a CSV parser's last read-ahead
    return total, n_chunks, reused
