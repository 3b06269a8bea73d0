"""The files of a batch scoring job: its lock, work directory, parts and final output.

A job holds an exclusive ``flock`` on ``<output>.lock`` (:func:`output_lock`). Chunk ``k``
is written to ``<output>.parts/part-<k>.parquet`` and committed by ``part-<k>.json``
(:func:`commit_part`); ``manifest.json`` records what the parts belong to
(:func:`prepare_workdir`), and :func:`assemble` concatenates the parts into a temporary
file renamed onto the output. Every write goes to a temporary name first; an ``OSError``
becomes an :class:`OutputError` naming what could not be written (:func:`writing`).
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import hashlib
import json
import logging
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from gananomaly.pipelines.csv_input import COMPRESSION, nullable_int
from gananomaly.pipelines.frame_scoring import ScoreReport

from gananomaly._atomic import atomic_open, make_temporary, remove_stale_temporaries, set_new_file_mode

__all__ = ["MANIFEST_NAME", "MANIFEST_FORMAT", "MANIFEST_VERSION", "OutputError", "writing", "output_lock",
           "content_hash", "write_part", "commit_part", "reuse_part", "assemble", "output_compression", "check_output",
           "concat_parts", "prepare_workdir", "write_json_atomic", "fsync_dir", "job_stats"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "gananomaly-batch-score"
# 3: categorical and ID columns of a CSV are read as text (parts of version 2 may hold other values)
# 4: the model fingerprint covers everything a save writes; integer IDs stay integer in the parts
MANIFEST_VERSION = 4


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, obj: Any, indent: int = 1) -> None:
    """Write ``obj`` as JSON to ``path``, whole or not at all."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=indent, default=str)


class OutputError(OSError, ValueError):
    """The output cannot be written: another job holds its lock, the disk is full, the
    directory is read-only or not ours. An ``OSError`` (``errno`` set when known) that is
    also a ``ValueError``, so the command line prints its one-line message (exit code 2).
    Whatever the cause, no partial file is left behind and a previous output is untouched."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


@contextlib.contextmanager
def writing(what: str, path: Path, hint: str = "") -> Iterator[None]:
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
def output_lock(out_path: Path) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<output>.lock`` for the whole job; refuse at once
    when another job holds it. The lock dies with the process (no stale lock after a
    crash); the file is removed on exit, and a job that locked a file just removed by the
    previous holder (a different inode than the path's) locks the new one instead."""
    import fcntl

    lock = out_path.with_name(out_path.name + ".lock")
    while True:
        with writing("the lock file", lock):
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


def content_hash(files: list[Path], names: list[str] | None = None, unreadable_ok: bool = False) -> str:
    """SHA-256 of the files' bytes (and names, when given), read in 1 MiB blocks. Resume
    trusts this, not sizes and modification times: an edit in place with its time restored
    changes it. About 0.6 s per GB from the page cache (a small share of scoring the same
    bytes); SHA-256 was faster than BLAKE2b here (CPU SHA instructions). ``unreadable_ok``: a
    file that cannot be opened (a link to nothing in a folder of images, which the job names
    and skips) counts as a marker instead of failing the job."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    for i, path in enumerate(files):
        if names is not None:
            h.update(f"{len(names[i])}:{names[i]}".encode())
        try:
            fh = open(path, "rb", buffering=0)
        except OSError:
            if not unreadable_ok:
                raise
            h.update(b"\0unreadable\0")
            continue
        with fh:
            while n := fh.readinto(buf):
                h.update(view[:n])
    return h.hexdigest()


def write_part(path: Path, scores: pd.DataFrame) -> None:
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


def commit_part(work: Path, k: int, scores: pd.DataFrame, report: ScoreReport, rows: tuple[int, int]) -> None:
    """Write chunk ``k``'s scores, then commit them with its metadata: the report, the
    chunk number and the first and last input row it covers (checked on reuse)."""
    part, meta = _part_paths(work, k)
    hint = f"; the output was not changed (rerun with --resume to reuse the chunks scored in {str(work)!r})"
    with writing("scores to", part, hint):
        write_part(part, scores)
        write_json_atomic(meta, {**report.to_dict(), "chunk": k, "rows": list(rows)})


def reuse_part(work: Path, k: int, rows: tuple[int, int], n_read: int) -> ScoreReport | None:
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


def assemble(work: Path, n_parts: int, out_path: Path, out_format: str, out_dir: Path) -> None:
    """Concatenate the parts into a uniquely named temporary file next to the output and
    rename it onto the output; on any failure the temporary file is removed (the parts
    stay, for --resume). A CSV output is compressed as its suffix says (``.csv.gz``)."""
    hint = (f"; the output was not changed (rerun with --resume to reuse the {n_parts} chunk(s) scored in "
            f"{str(work)!r})")
    # the temporary name ends in the output's compression suffix, which concat_parts follows
    compressed = (output_compression(out_path) or "") if out_format == "csv" else ""
    with writing("the output", out_path, hint):
        remove_stale_temporaries(out_dir, out_path.name)  # what a job killed while writing it left
        tmp = make_temporary(out_dir, out_path.name, ".tmp" + compressed)
        try:
            concat_parts([_part_paths(work, k)[0] for k in range(n_parts)], tmp, out_format)
            set_new_file_mode(tmp, out_path)
            os.replace(tmp, out_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(out_dir)
    shutil.rmtree(work, ignore_errors=True)


def output_compression(out_path: Path, option: str = "--output") -> str | None:
    """The compression of a CSV output, from its suffix (``.gz``, ``.bz2``, ``.xz``; none
    for another suffix); a suffix of a compression that cannot be written here is refused."""
    suffix = out_path.suffix.lower()
    if suffix in CSV_WRITERS:
        return suffix
    if suffix in COMPRESSION:
        raise ValueError(f"{option} {str(out_path)!r}: a CSV output can be compressed as "
                         f"{', '.join('.csv' + s for s in CSV_WRITERS)}, not {suffix}")
    return None


def check_output(out_path: Path, output_format: str | None = None, option: str = "--output") -> tuple[str, Path]:
    """The format (``output_format``, else from the name) and the directory of an output file
    the option ``option`` names; refuses, before any work, a format or CSV compression that
    cannot be written, a missing directory and a path that is a directory."""
    from gananomaly.pipelines.table_data import file_format

    out_format = file_format(out_path, output_format)
    if out_format == "csv":
        output_compression(out_path, option)  # refuses a compression that cannot be written
    out_dir = out_path.parent if str(out_path.parent) else Path(".")
    if not out_dir.is_dir():
        raise ValueError(f"{option}: directory {str(out_dir)!r} does not exist")
    if out_path.is_dir():
        raise ValueError(f"{option} {str(out_path)!r} is a directory")
    return out_format, out_dir


CSV_WRITERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def concat_parts(parts: list[Path], tmp: Path, out_format: str) -> None:
    """Concatenate the part files into ``tmp`` one part at a time (bounded memory). A
    Parquet output takes the schema all parts agree on (a column that is all missing in
    one part, or an empty part, has the null type there); a CSV output is compressed as
    the suffix of ``tmp`` says (``.gz``, ``.bz2``, ``.xz``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if out_format == "parquet":
        schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in parts],
                                  promote_options="permissive")
        with pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                table = pq.read_table(part)
                writer.write_table(table if table.schema == schema else table.cast(schema))
    else:
        opener = CSV_WRITERS.get(tmp.suffix.lower(), open)
        with opener(tmp, "wt", encoding="utf-8", newline="") as fh:
            for i, part in enumerate(parts):
                pq.read_table(part).to_pandas(types_mapper=nullable_int).to_csv(fh, header=i == 0, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


def _part_paths(work: Path, k: int) -> tuple[Path, Path]:
    return work / f"part-{k:06d}.parquet", work / f"part-{k:06d}.json"


# A run under the "error" policy only committed chunks without such rows, so its chunks
# are what the lenient policy would have written too; the reverse is not true.
_LENIENT_RESUME = {"on_bad_rows": "error", "unseen": "error"}


# Manifest keys added later, with the behaviour of the runs whose manifests lack them (image
# jobs skipped unreadable files before on_bad_rows reached them; table manifests always had it).
_BEFORE_THE_KEY = {"on_bad_rows": "skip"}


def discard_unused_workdir(work: Path) -> None:
    """Remove the work directory of a job that failed before committing a chunk: there is
    nothing to resume, and every failed attempt would leave one behind."""
    if work.is_dir() and not any(work.glob("part-*")):
        shutil.rmtree(work, ignore_errors=True)


def prepare_workdir(work: Path, manifest: dict[str, Any], resume: bool) -> None:
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
            if isinstance(old, dict) and old.get("version") != manifest["version"]:
                raise ValueError(f"cannot resume from {str(work)!r}: it was written by another gananomaly (work "
                                 f"directory version {old.get('version')!r}, this one writes "
                                 f"{manifest['version']!r}); run without --resume to start over")
            old = {**_BEFORE_THE_KEY, **old}  # a manifest written before a key existed: its behaviour then
            diffs = [k for k in manifest if old.get(k) != manifest[k] and old.get(k) != _LENIENT_RESUME.get(k, ...)]
            if diffs:
                detail = "; ".join(_difference(k, old.get(k), manifest[k]) for k in diffs if k != "model_id")
                detail = "; ".join(filter(None, [detail, "the model changed" if "model_id" in diffs else ""]))
                raise ValueError(f"cannot resume from {str(work)!r}: the interrupted run differs ({detail}); "
                                 "run without --resume to start over")
            if old != manifest:  # a lenient policy now: later resumes must not take its chunks for strict ones
                with writing("the manifest", mpath):
                    write_json_atomic(mpath, manifest)
            done = len(list(work.glob("part-*.json")))
            log.info("resuming from %s: %d chunk(s) already scored", work, done)
            return
        log.warning("discarding the work directory of an earlier interrupted run: %s (use --resume to continue it)",
                    work)
        shutil.rmtree(work)
    elif resume:
        log.info("nothing to resume at %s; scoring the whole input", work)
    with writing("the work directory", work):
        work.mkdir()
        try:
            write_json_atomic(mpath, manifest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise


def _difference(key: str, then: Any, now: Any) -> str:
    if key == "input_sha256":
        return f"the input's content changed (SHA-256 {str(then)[:12]}... then, {str(now)[:12]}... now)"
    return f"{key}: {then!r} then, {now!r} now"


def job_stats(total: ScoreReport, out_path: Path, n_chunks: int, reused: int, model_id: str,
              start_time: float) -> dict[str, Any]:
    """The summary a finished job returns: the report's counts, the output, chunks, timing."""
    import time

    seconds = time.perf_counter() - start_time
    stats = total.to_dict()
    stats.update({"output": str(out_path), "chunks": n_chunks, "chunks_reused": reused, "seconds": seconds,
                  "rows_per_s": total.rows_scored / seconds if seconds > 0 else float("nan"), "model_id": model_id})
    return stats
