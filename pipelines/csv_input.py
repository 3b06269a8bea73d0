"""Reading CSV text the same way when a model is fitted and when it scores.

pandas infers a column's type from the rows it sees: per chunk when a file is streamed,
once for the whole file at fit time. A column of codes such as ``"001"`` would become the
number 1 in one place and stay ``"001"`` in another, so the columns whose values are text
(categorical and ID columns) are always read as strings (:func:`read_options`). An ID is
copied to the output as it is: ``"NA"`` or ``"null"`` are IDs there, not missing values.

The header is read as it is written (:func:`header_names`): pandas renames a repeated
name to ``name.1``, which would hide it. Text that is not UTF-8 is an error naming the
first line that is not (:func:`not_utf8`).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.io.parsers.readers import STR_NA_VALUES

__all__ = ["COMPRESSION", "NotUTF8Error", "compression_of", "nullable_int", "read_options", "header_names",
           "csv_columns", "check_unique", "not_utf8", "read_whole_csv", "trailing_options",
           "check_trailing", "split_trailing", "beyond_header", "TRAILING"]

#: File suffix -> pandas' name of the compression (as pandas infers it from a path).
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}
_OPENERS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}


class NotUTF8Error(ValueError):
    """The CSV text is not UTF-8 (the message names the first line that is not)."""


def compression_of(path: Path) -> str | None:
    return COMPRESSION.get(Path(path).suffix.lower())


def read_options(header: Iterable[str], text_columns: Iterable[str] = (),
                 id_columns: Iterable[str] = ()) -> dict:
    """``read_csv`` keyword arguments: ``text_columns`` and ``id_columns`` read as strings;
    the ID columns without pandas' missing-value strings ("NA", "null", "None", ...),
    every other column of ``header`` with them."""
    ids = set(id_columns)
    if not ids and not text_columns:
        return {}
    # object, not str: the values stay the Python strings the parser made (faster to read
    # than pandas' string dtype); an ID keeps the string dtype it always had
    options: dict = {"dtype": {**{c: object for c in text_columns}, **{c: str for c in ids}}}
    if ids:
        options["keep_default_na"] = False
        options["na_values"] = {c: sorted(STR_NA_VALUES) for c in header if c not in ids}
    return options


def header_names(path: Path) -> list[str]:
    """The names of the CSV header as written (a repeated name stays repeated)."""
    first = _read_head(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(v) for v in first.iloc[0].tolist()] if len(first) else []


def csv_columns(path: Path) -> list[str]:
    """The column names pandas reads from the CSV header; a repeated name is refused."""
    check_unique(header_names(path), str(path))
    return [str(c) for c in _read_head(path, nrows=0).columns]


def _read_head(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, compression=compression_of(path), **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{str(path)!r} is empty (no header line)") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from exc
    except pd.errors.ParserError as exc:
        raise ValueError(f"{str(path)!r} is not a readable CSV file: {exc}") from exc


def check_unique(columns: list[str], where: str) -> None:
    """Refuse a table whose columns repeat a name (which of them would be the feature?)."""
    dupes = sorted({c for c in columns if c and columns.count(c) > 1})
    if dupes:
        raise ValueError(f"{where} has duplicate column names: {dupes}; every column must have its own name")


def not_utf8(path: Path, exc: UnicodeDecodeError) -> NotUTF8Error:
    """The error for a CSV file that is not UTF-8, naming its first line that is not
    (found by decoding the file line by line: a newline byte never occurs inside a
    UTF-8 character, so a line decodes on its own exactly when it is valid)."""
    where = str(path)
    fix = ("CSV input must be UTF-8 text: convert the file (e.g. `iconv -f latin1 -t utf-8`) or write it as "
           "Parquet")
    opener = _OPENERS.get(compression_of(path) or "", open)
    try:
        with opener(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:
                    what = "the header" if number == 1 else f"row {number - 1}"
                    return NotUTF8Error(f"{where}: {what} (line {number}) is not valid UTF-8: byte "
                                        f"0x{line[bad.start]:02x} at position {bad.start + 1} of the line. {fix}")
    except OSError:  # unreadable here (a compression this module does not open): pandas' words
        pass
    return NotUTF8Error(f"{where}: not valid UTF-8 text ({exc.reason}). {fix}")


def nullable_int(arrow_type):
    """pandas' nullable integer dtype of an arrow integer type (None for other types): an
    integer column with a missing value stays integer (numpy's int64 would become float64,
    and large IDs would round onto each other)."""
    import pyarrow as pa

    if not pa.types.is_integer(arrow_type):
        return None
    return pd.api.types.pandas_dtype(str(arrow_type).replace("u", "U").replace("i", "I"))


# The name given to the empty field after the last column of lines that end in a delimiter.
TRAILING = "\x00trailing delimiter"


def trailing_options(path: Path, header: list[str]) -> dict:
    """``read_csv`` options for a file whose first data line ends in a delimiter (one empty
    field more than the header names): that field is read as the column :data:`TRAILING`
    (check it with :func:`check_trailing`, then drop it). pandas on its own took the first
    column as the index and moved every value one column to the left. Empty otherwise."""
    try:
        first = _read_head(path, header=None, skiprows=1, nrows=1, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return {}
    if first.shape[1] == len(header) + 1 and first.iloc[0, -1] == "":
        return {"names": [*header, TRAILING], "header": 0}
    return {}


def split_trailing(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.Series | None]:
    """(``frame`` without the :data:`TRAILING` column, mask of the rows holding a value there,
    that column or None when the frame has none)."""
    if TRAILING not in frame.columns:
        return frame, np.zeros(len(frame), dtype=bool), None
    extra = frame[TRAILING]
    bad = extra.notna().to_numpy() & (extra.astype(str).str.strip() != "").to_numpy()
    return frame.drop(columns=TRAILING), bad, extra


def beyond_header(path: Path, row: int, value, *, can_skip: bool) -> ValueError:
    """The refusal of a data row with a value after the header's last column (``can_skip``:
    the reader takes ``on_bad_rows='skip'``)."""
    skip = " or skip such rows (on_bad_rows='skip', --on-bad-rows skip)" if can_skip else ""
    return ValueError(f"{str(path)!r}: row {row} has a value after the header's last column ({value!r}; more fields "
                      f"than the header names). Fix the file (a column without a name in the header?){skip}")


def check_trailing(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` without the :data:`TRAILING` column; a line with a value there is refused."""
    frame, bad, extra = split_trailing(frame)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise beyond_header(path, k + 1, extra.iloc[k], can_skip=False)
    return frame


def read_whole_csv(path: Path, header: list[str], **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` of a whole file, read as its header says (lines ending in a delimiter:
    :func:`trailing_options`)."""
    trailing = trailing_options(path, header)
    if trailing:  # the empty field's column as text: a value there is named as written
        kwargs = {**kwargs, "dtype": {**kwargs.get("dtype", {}), TRAILING: str}}
    return check_trailing(pd.read_csv(path, compression=compression_of(path), **trailing, **kwargs), path)
