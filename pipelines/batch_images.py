"""Batch scoring of images: a folder of image files (or a ``.npy``/``.npz`` array) streamed
through an image model into the table schema of ``gananomaly score`` (``file``, the
components, ``score``, ``label``), with the locking, parts and resume of
:mod:`gananomaly.pipelines.batch_files`."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines import image_files
from gananomaly.pipelines.batch_files import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    assemble,
    commit_part,
    content_hash,
    discard_unused_workdir,
    job_stats,
    prepare_workdir,
    reuse_part,
)
from gananomaly.pipelines.batch_read import progress_bar
from gananomaly.pipelines.frame_scoring import MAX_LISTED_ROWS, ScoreReport, score_prepared
from gananomaly.pipelines.model_loading import load_model

__all__ = ["score_image_source", "image_shape"]

log = logging.getLogger(__name__)


def image_shape(model) -> tuple[int, ...] | None:
    """The (C, H, W) a fitted detector (or pipeline ending in one) takes; None for a table model."""
    from sklearn.pipeline import Pipeline

    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    return getattr(det, "image_shape_", None)


def score_image_source(model, in_path: Path, out_path: Path, out_format: str, out_dir: Path, *, chunk_rows: int,
                       chunk_bytes: int, resume: bool, progress: bool | None, start_time: float,
                       model_id: str | None = None, on_bad_rows: str = "skip") -> dict[str, Any]:
    """Score a folder of image files (or a ``.npy``/``.npz`` array) with an image model:
    ``chunk_rows`` files read at a time, at most ``chunk_bytes`` of decoded pixels (memory
    bounded by one chunk of images; an array file is read whole), parts committed per chunk
    so an interrupted run resumes, the output written whole or not at all. ``model_id``
    given: ``model`` is already loaded and that is its fingerprint. ``on_bad_rows``: an
    unreadable file is skipped and named (``"skip"``) or stops the job, named (``"error"``)."""
    if model_id is None:
        model, model_id = load_model(model)
    shape = image_shape(model)
    if shape is None:
        what = "is a folder (a folder is scored as images)" if in_path.is_dir() else "holds images"
        raise ValueError(f"--input {str(in_path)!r} {what}, but the model was fitted on a table: "
                         "pass a CSV or Parquet file")
    # A chunk of decoded images (float64) stays within chunk_bytes, whatever --chunk-rows says.
    chunk_rows = int(min(chunk_rows, max(1, chunk_bytes // (8 * int(np.prod(shape))))))
    names, chunks, array, content = _image_chunks(in_path, chunk_rows)
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "input": str(in_path.resolve()),
                "input_files": hashlib.sha256("\n".join(names).encode()).hexdigest(), "n_images": len(names),
                "input_sha256": content, "chunk_rows": chunk_rows, "model_id": model_id, "on_bad_rows": on_bad_rows}
    work = out_dir / f"{out_path.name}.parts"
    prepare_workdir(work, manifest, resume)
    total, reused = ScoreReport(), 0
    bar = progress_bar(len(names), progress, f"scoring {in_path.name}")
    try:
        for k, chunk in enumerate(chunks):
            span = (k * chunk_rows + 1, k * chunk_rows + len(chunk))
            report = reuse_part(work, k, span, len(chunk)) if resume else None
            if report is not None:
                reused += 1
            else:
                scores, report = _score_chunk(model, in_path, chunk, names, array, shape, on_bad_rows)
                commit_part(work, k, scores, report, span)
            total.add(report)
            bar.update(len(chunk))
    except BaseException:
        discard_unused_workdir(work)
        raise
    finally:
        bar.close()
    if total.rows_scored == 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ValueError(f"{in_path}: none of its {total.rows_read} images could be read")
    assemble(work, len(chunks), out_path, out_format, out_dir)
    return job_stats(total, out_path, len(chunks), reused, model_id, start_time)


def _image_chunks(in_path: Path, chunk_rows: int) -> tuple[list[str], list, Any, str]:
    """(names, chunks of files or positions, the array source or None, content hash)."""
    if in_path.is_dir():
        root = image_files.scoring_folder(in_path)  # a data set folder's test/, as `image score` takes it
        files = image_files.list_images(root)
        if not files:
            raise ValueError(f"--input: no image files in folder {str(root)!r}")
        # named relative to the folder given, as `image score` names them (a data set folder's
        # images as test/KIND/FILE): the two commands' tables join on the file
        names = [image_files.text_name(str(f.relative_to(in_path))) for f in files]
        chunks = [files[k : k + chunk_rows] for k in range(0, len(files), chunk_rows)]
        return names, chunks, None, content_hash(files, names, unreadable_ok=True)
    data = image_files.load_image_source(in_path, split="test" if in_path.suffix.lower() == ".npz" else "train")
    if data is None or len(data.names) == 0:
        raise ValueError(f"--input: no images in {str(in_path)!r}{image_files.npz_keys_hint(in_path)}")
    chunks = [list(range(k, min(k + chunk_rows, len(data.names)))) for k in range(0, len(data.names), chunk_rows)]
    return data.names, chunks, data, content_hash([in_path])


def _score_chunk(model, in_path: Path, chunk: list, names: list[str], array, shape, on_bad_rows: str
                 ) -> tuple[pd.DataFrame, ScoreReport]:
    if array is None:
        mode = "grey" if shape[0] == 1 else "rgb"
        # a chunk of unreadable files only is committed empty (its files counted as skipped)
        on_error = "raise" if on_bad_rows == "error" else "skip"
        data = image_files.load_image_files(chunk, mode=mode, size=shape[1:], on_error=on_error,
                                            root=in_path,
                                            allow_empty=True)
        images, chunk_names, skipped = data.images, data.names, data.skipped
    else:
        images, chunk_names, skipped = array.images[chunk], [names[i] for i in chunk], []
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if not finite.all():
            bad = [chunk_names[i] for i in np.flatnonzero(~finite)]
            if on_bad_rows == "error":
                raise ValueError(f"{in_path}: {len(bad)} image(s) hold NaN or infinity: {bad[:10]} (rerun with "
                                 "--on-bad-rows skip to score the others)")
            log.warning("%s: skipped %d image(s) that hold NaN or infinity: %s", in_path, len(bad), bad[:10])
            images, chunk_names = images[finite], [n for n, ok in zip(chunk_names, finite) if ok]
            skipped = [(name, "NaN or infinity") for name in bad]
    if len(chunk_names):
        try:
            scores = score_prepared(model, images)
        except ValueError as exc:
            if array is None:
                raise
            raise ValueError(f"{in_path}: {exc}") from exc  # the array's shape: name the file
    else:
        scores = score_prepared(model, np.empty((0,) + tuple(shape)))
    nonfinite = ~np.isfinite(scores.drop(columns="label").to_numpy(dtype=np.float64)).all(axis=1)
    if nonfinite.any():
        raise ValueError(f"{in_path}: the model's scores are not finite for "
                         f"{[chunk_names[i] for i in np.flatnonzero(nonfinite)[:5]]}")
    scores.insert(0, "file", pd.Series(chunk_names, dtype=object))
    report = ScoreReport(rows_read=len(chunk), rows_scored=len(chunk_names), n_skipped=len(skipped),
                         skipped_rows=[name for name, _ in skipped][:MAX_LISTED_ROWS])
    return scores, report  # the skipped files were named by load_image_files (once)
