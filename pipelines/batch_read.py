"""Reading the input of a batch scoring job in chunks of rows, with a progress bar.

Parquet: ``ParquetFile.iter_batches`` over the needed columns only (without pre-buffering,
so memory follows the chunk, not the file), regrouped into chunks of exactly ``chunk_rows``
rows. CSV: ``pandas.read_csv(chunksize=...)`` from an open file whose position tells how
many bytes were read, so the progress bar shows a percentage and an ETA against the file's
size (a Parquet file's row count comes from its footer).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from gananomaly.pipelines.csv_input import (
    TRAILING,
    beyond_header,
    check_unique,
    compression_of,
    csv_columns,
    not_utf8,
    nullable_int,
    read_options,
    split_trailing,
    trailing_options,
)
from gananomaly.pipelines.table_data import stored_columns

__all__ = ["Chunk", "file_columns", "parquet_chunks", "csv_chunks", "progress_total", "progress_bar"]

_BAD_LINE = re.compile(r"[Ss]kipping line (\d+): (.*)")
_PARSER_ERR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


@dataclass
class Chunk:
    """One chunk of the input: its number, the needed columns of its rows, their 1-based
    data-row numbers, the numbers of malformed lines it covers, and how far it advances the
    progress (rows for Parquet, bytes of the file for CSV)."""

    index: int
    frame: pd.DataFrame
    rows: np.ndarray
    malformed: list[int]
    advance: int = 0


def file_columns(path: Path, fmt: str) -> tuple[list[str], int | None]:
    """Column names and (Parquet) row count of the input, read from its header/footer;
    refuses a repeated column name. A Parquet file's columns are every column it stores,
    a pandas index included (bar an unnamed one, ``__index_level_0__``, which was no column)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on non-Parquet bytes
            raise ValueError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc
        names = stored_columns(pf.schema_arrow.names)
        check_unique(names, str(path))
        return names, int(pf.metadata.num_rows)
    return csv_columns(path), None


def parquet_chunks(path: Path, columns: list[str], chunk_rows: int, id_column: str | None = None) -> Iterator[Chunk]:
    """Chunks of a Parquet file. An integer ID column stays integer (pandas' nullable type)
    in every chunk: a chunk holding a missing ID turned it into floats (1101.0, and large IDs
    rounded onto each other)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pre_buffer off: with it, pyarrow keeps the byte ranges it pre-read for the whole file
    # (memory grew with the file, not with the chunk)
    pf = pq.ParquetFile(path, pre_buffer=False)
    pending: list = []
    n_pending = 0
    index = 0
    start = 1

    def emit(table) -> Chunk:
        nonlocal index, start
        # without pandas' metadata: it would turn a column stored as the index back into the
        # index, and the column would be gone from the frame
        frame = table.to_pandas(ignore_metadata=True)
        if id_column in table.column_names and pa.types.is_integer(table.schema.field(id_column).type):
            frame[id_column] = table.column(id_column).to_pandas(types_mapper=nullable_int)
        chunk = Chunk(index, frame, np.arange(start, start + table.num_rows), [], table.num_rows)
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


def csv_chunks(path: Path, columns: list[str], chunk_rows: int, id_column: str | None,
               on_bad_rows: str, text_columns: Sequence[str] = ()) -> Iterator[Chunk]:
    """Chunks of a CSV file. Row numbers are 1-based data rows (the header is row 0); a
    malformed line (wrong number of fields) keeps its number, so later rows keep theirs.
    Each chunk advances the progress by the bytes of the file read since the last one (the
    parser reads ahead by its buffer, so the sum reaches the file's size by the last chunk).
    ``text_columns`` (the model's categorical columns) and the ID column are read as
    strings, so a value does not depend on the other rows of its chunk; the ID keeps
    "NA", "null" and the like as they are written."""
    # Every column is parsed (not only ``columns``): with ``usecols`` the parser would no
    # longer notice lines with too many fields.
    header, _ = file_columns(path, "csv")
    options = read_options(header, text_columns, [id_column] if id_column else [])
    compression = compression_of(path)
    skipped: list[int] = []  # data-row numbers of malformed lines seen so far
    reported = 0
    index = 0
    size = path.stat().st_size
    done = 0
    try:
        # lines ending in a delimiter: read as the header says (pandas took the first column as
        # the index, and every value moved one column to the left)
        trailing = trailing_options(path, header)
        if trailing:  # the empty field's column as text: a value there is named as written
            options = {**options, "dtype": {**options.get("dtype", {}), TRAILING: str}}
        with open(path, "rb") as fh, pd.read_csv(fh, chunksize=chunk_rows, compression=compression, **options,
                                                 **trailing, index_col=False,
                                                 on_bad_lines="warn" if on_bad_rows == "skip" else "error") as reader:
            while (frame := _next_chunk(reader, skipped, path)) is not None:
                rows = frame.index.to_numpy(dtype=np.int64) + 1
                for s in skipped:
                    rows = rows + (rows >= s)
                frame, rows, extra = _trailing_values(frame, rows, path, on_bad_rows)
                last = int(rows[-1]) if len(rows) else max(extra, default=0)
                new_bad = sorted([s for s in skipped[reported:] if s <= last] + extra)
                reported += len(new_bad) - len(extra)
                position = min(fh.tell(), size)
                yield Chunk(index, frame[columns].reset_index(drop=True), rows, new_bad, position - done)
                done = position
                index += 1
        if skipped[reported:]:
            # malformed lines after the last good row: an empty chunk carries their count
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            yield Chunk(index, empty, np.empty(0, dtype=np.int64), skipped[reported:], size - done)
    except pd.errors.ParserError as exc:
        m = _PARSER_ERR.search(str(exc))
        if m:
            expected, line, saw = (int(g) for g in m.groups())
            # named by its line in the file: blank lines and quoted line breaks before it make its
            # row number differ from line - 1, and the parser reports lines only
            raise ValueError(f"{str(path)!r}: line {line} (the header is line 1) is malformed: expected {expected} "
                             f"fields, saw {saw}. Fix the file or skip such rows (on_bad_rows='skip', "
                             "--on-bad-rows skip)") from exc
        raise ValueError(f"{str(path)!r}: cannot parse the CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from exc


def _trailing_values(frame: pd.DataFrame, rows: np.ndarray, path: Path, on_bad_rows: str
                     ) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """(frame, rows, malformed rows) once the empty field after the last column of a file
    whose lines end in a delimiter is checked and dropped: a row with a value there (more
    fields than the header names) is malformed, skipped under ``skip`` as any malformed line,
    else refused naming its row and the value as written."""
    frame, bad, extra = split_trailing(frame)
    if not bad.any():
        return frame, rows, []
    if on_bad_rows != "skip":
        k = int(np.flatnonzero(bad)[0])
        raise beyond_header(path, int(rows[k]), extra.iloc[k], can_skip=True)
    return frame.loc[~bad], rows[~bad], rows[bad].tolist()


def _next_chunk(reader, skipped: list[int], path: Path) -> pd.DataFrame | None:
    """The reader's next frame (None at the end); the data-row numbers of the malformed
    lines it reported go into ``skipped`` (sorted). Only the parser's own warnings are
    collected (per read, never across a yield); others are re-issued. A line with a value
    beyond the header's last column (which the parser would drop) is refused."""
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
        elif issubclass(w.category, pd.errors.ParserWarning) and "does not match length of data" in str(w.message):
            where = "" if frame is None or not len(frame) else \
                f" among data rows {int(frame.index[0]) + 1}-{int(frame.index[-1]) + 1}"
            raise ValueError(f"{str(path)!r}: a line{where} has a value after the header's last column (more fields "
                             "than the header names); fix the file (a column without a name in the header?)")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    skipped.sort()
    return frame

def progress_total(path: Path, fmt: str, n_rows: int | None) -> tuple[int | None, str]:
    """(total, unit) of a job's progress: the row count of a Parquet file, the size in bytes
    of a CSV file (its chunks advance the bar by the bytes they consumed)."""
    if fmt == "parquet":
        return n_rows, "rows"
    return path.stat().st_size, "B"


def progress_bar(total: int | None, enabled: bool | None, desc: str, unit: str = "rows"):
    """A tqdm bar (``unit="B"``: scaled to kB/MB); ``enabled`` None: on only when stderr is a terminal."""
    from tqdm.auto import tqdm

    disable = None if enabled is None else not enabled
    return tqdm(total=total, unit=unit, desc=desc, disable=disable, leave=False, dynamic_ncols=True,
                unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)
