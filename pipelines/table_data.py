"""Reading tables: the file format from a name, whole CSV/Parquet files, the table a config
names, and the feature columns it holds (the roles a config gives or the dtypes imply).

The input schema of a *fitted* model (:class:`ModelSchema`, :func:`model_schema`,
:func:`prepare_frame`) lives in :mod:`gananomaly.explanations` and is re-exported here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from gananomaly.pipelines.csv_input import (
    check_unique,
    csv_columns,
    header_names,
    not_utf8,
    read_options,
    read_whole_csv,
)
from gananomaly.pipelines.table_config import TabularConfig

from gananomaly.explanations import ModelSchema, blank_cells, format_rows, model_schema, prepare_frame

__all__ = ["file_format", "read_file", "stored_columns", "read_table", "infer_columns", "schema_of", "ModelSchema",
           "model_schema", "prepare_frame", "format_rows"]

log = logging.getLogger("gananomaly.pipelines.tabular")
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")  # an unnamed index pandas stored in a Parquet file

def file_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``"csv"`` or ``"parquet"``: ``fmt`` if given, else from the suffix (``.csv``,
    ``.csv.gz``, ``.tsv`` is not supported; ``.parquet``, ``.pq``)."""
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"format must be 'csv' or 'parquet', got {fmt!r}")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet"
    if ".csv" in suffixes[-2:]:
        return "csv"
    raise ValueError(f"cannot tell the format of {str(path)!r} from its name; use a .csv or .parquet suffix "
                     "(in Python, or as data.format in a config, the format can also be given explicitly)")


def read_table(config: TabularConfig) -> pd.DataFrame:
    """The whole table named by ``config`` (a file or a built-in data set). A CSV file's
    categorical columns (those the config names, or every column but the numeric ones when
    it names those) are read as strings and its ID columns as written, so ``"001"`` stays
    ``"001"``, as batch scoring reads it."""
    if config.builtin is not None:
        from gananomaly.pipelines.datasets import load_builtin

        return load_builtin(config.builtin, **config.options)
    path = config.data_path
    if path is None:
        raise ValueError("data: the config names no data (data.path or data.builtin); give one, or pass the "
                         "table itself: fit_tabular(config, dataframe)")
    if not path.is_file():
        raise FileNotFoundError(f"data.path: no such file {str(path)!r}")
    try:
        text = _text_columns(config, path)
        return read_file(path, config.format, text_columns=text, id_columns=config.id_columns)
    except ValueError as exc:
        raise ValueError(f"data.path: {exc}") from exc


def _text_columns(config: TabularConfig, path: Path) -> list[str]:
    context = [config.context_column] if config.context_column else []  # categories: as written, as scoring reads
    if config.categorical_columns is not None:
        return list(config.categorical_columns) + context
    if config.numeric_columns is None or file_format(path, config.format) != "csv":
        return context  # the roles follow the types the file's values have
    others = set(config.numeric_columns) | set(config.id_columns) | set(config.drop_columns) | {config.label_column}
    return [c for c in header_names(path) if c not in others]


def read_file(path: str | os.PathLike, fmt: str | None = None, *, text_columns: Sequence[str] = (),
              id_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a whole CSV or Parquet file (format from the suffix unless ``fmt`` is given).
    Every column a Parquet file stores is a column (an index pandas stored with it too).
    A CSV file's ``text_columns`` and ``id_columns`` are read as strings; the ID columns
    keep "NA", "null" and the like as IDs (the other columns read them as missing).

    Raises
    ------
    ValueError
        Empty file, no rows, a repeated column name, a CSV file that is not UTF-8 (naming
        its first bad line) or a file that cannot be parsed.
    """
    path = Path(path)
    fmt = file_format(path, fmt)
    try:
        if fmt == "parquet":
            df = _read_parquet(path)
        else:
            header = csv_columns(path)
            df = read_whole_csv(path, header, **read_options(header, text_columns, id_columns))
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{str(path)!r} is empty") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from exc
    except (pd.errors.ParserError, OSError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as {fmt}: {exc}") from exc
    if len(df) == 0:
        raise ValueError(f"{str(path)!r} has a header but no rows")
    if fmt == "csv" and df.shape[1] == 1:
        seps = [name for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")) if sep in str(df.columns[0])]
        if seps:
            raise ValueError(f"{str(path)!r} reads as one column named {str(df.columns[0])[:80]!r}: its fields are "
                             f"separated by {seps[0]}, but CSV files are read with commas; save it with commas")
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    """Every stored column as a column: without pandas' metadata, which would make a column
    stored as the index the index again. Only an unnamed index pandas stored
    (``__index_level_0__``) stays out, as it was never a column."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    keep = stored_columns(table.column_names)
    check_unique(keep, str(path))
    return table.select(keep).to_pandas(ignore_metadata=True)


def stored_columns(names: Sequence[str]) -> list[str]:
    """The columns of a Parquet file with the ``names`` its schema lists: all of them but
    an unnamed index pandas stored (``__index_level_0__``, never a column of the frame)."""
    return [str(n) for n in names if not _PANDAS_INDEX.fullmatch(str(n))]


def infer_columns(config: TabularConfig, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns of ``df`` under ``config``.

    Columns named in the config must exist; unlisted columns are numeric when their dtype
    is a number (or boolean) and categorical otherwise.
    """
    columns = [str(c) for c in df.columns]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"the data has duplicate column names: {dupes}")
    for key in ("id_columns", "drop_columns", "numeric_columns", "categorical_columns"):
        missing = [c for c in (getattr(config, key) or []) if c not in columns]
        if missing:
            raise ValueError(f"data.{key}: column(s) {missing} not in the data (columns: {columns})")
    for key in ("label_column", "context_column"):
        col = getattr(config, key)
        if col is not None and col not in columns:
            raise ValueError(f"data.{key}: column {col!r} not in the data (columns: {columns})")
    reserved = set(config.id_columns) | set(config.drop_columns) | {config.label_column, config.context_column}
    free = [c for c in columns if c not in reserved]
    empty = [c for c in free if not df[c].notna().any()]
    if empty:
        raise ValueError(f"column(s) {empty[:10]} hold no values at all (every cell missing): list them in "
                         "data.drop_columns")
    dates = [c for c in free if _holds_dates(df[c])]
    if dates:
        raise ValueError(f"column(s) {dates} hold dates or durations, which the pipeline does not encode: derive "
                         "numbers from them (days since a date, hour of day, ...) or list them in data.drop_columns")
    if config.numeric_columns is not None and config.categorical_columns is not None:
        numeric, categorical = list(config.numeric_columns), list(config.categorical_columns)
    elif config.numeric_columns is not None:
        numeric = list(config.numeric_columns)
        categorical = [c for c in free if c not in numeric]
    elif config.categorical_columns is not None:
        categorical = list(config.categorical_columns)
        numeric = [c for c in free if c not in categorical]
    else:
        numeric = [c for c in free if pd.api.types.is_numeric_dtype(df[c])]
        categorical = [c for c in free if c not in numeric]
    for col in categorical:
        if config.categorical_columns is None or col not in config.categorical_columns:
            _refuse_numbers_read_as_text(df[col], col)
    if not numeric and not categorical:
        raise ValueError(f"no feature columns left: every column is an ID, dropped or the label (columns: {columns})")
    return numeric, categorical


# A text column whose cells are numbers in at least this share of its non-blank rows, with more
# distinct numbers than NUMERIC_TEXT_MIN_DISTINCT, looks numeric: with at most NUMERIC_TEXT_BAD
# of its cells (or 2) no number it is refused (a numeric column with a few bad cells), with more
# it is read as categories with a warning (codes such as ZIP and ZIP+4 mixed).
NUMERIC_TEXT_SHARE = 0.9
NUMERIC_TEXT_MIN_DISTINCT = 20
NUMERIC_TEXT_BAD = 0.01


# A date, a date and time, or a time of day written as text: 2024-01-31, 2024/01/31, 31/01/2024,
# 1/31/24, 31.01.2024, 31 Jan 2024, 31-Jan-2024, Jan 31, 2024, Wed, 31 Jan 2024 (RFC 2822), each
# with an optional time (12:00, 12:00:00.123, 12:00 PM, a zone); 12:00 or 7:30:15 alone.
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_TIME = r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?( ?[ap]\.?m\.?)?( ?(z|utc|gmt|[+-]\d{2}:?\d{2}))?"
_DATE_TEXT = re.compile(
    r"((mon|tue|wed|thu|fri|sat|sun)[a-z]*,? )?"
    r"(\d{4}-\d{1,2}-\d{1,2}|\d{4}/\d{1,2}/\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4}"
    rf"|\d{{1,2}}[ -]{_MONTH}[ -]\d{{2,4}}|{_MONTH} \d{{1,2}}(st|nd|rd|th)?,? \d{{4}})"
    rf"([ t]{_TIME})?|{_TIME}", re.IGNORECASE)


def _holds_dates(s: pd.Series) -> bool:
    """A column of dates, times or durations (datetime64/timedelta64, or Python date and time
    objects as Parquet's date32 reads)."""
    import datetime as _dt

    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        return True
    if s.dtype != object and not pd.api.types.is_string_dtype(s):
        return False
    sample = s.dropna().head(100)
    if len(sample) == 0:
        return False
    if all(isinstance(v, (_dt.date, _dt.time, _dt.timedelta)) for v in sample):
        return True
    # dates or times written as text (a CSV), many distinct (a few may be category codes)
    return (all(isinstance(v, str) and _DATE_TEXT.fullmatch(v.strip()) for v in sample)
            and s.nunique() > NUMERIC_TEXT_MIN_DISTINCT)


def _refuse_numbers_read_as_text(s: pd.Series, col: str) -> None:
    """Raise when an inferred categorical column is a numeric column holding a few cells that
    are no numbers (``"12,50"``, ``"n/a"``): one-hot encoding it would make every new amount
    an unseen category. Category codes (few distinct values) and columns the config lists as
    categorical pass."""
    text = s.astype(object)
    filled = ~blank_cells(text)
    if not filled.any():
        return
    values = pd.to_numeric(text[filled], errors="coerce")
    is_number = values.notna().to_numpy()
    if is_number.mean() < NUMERIC_TEXT_SHARE or is_number.all() or values.nunique() <= NUMERIC_TEXT_MIN_DISTINCT:
        return
    rows = (np.flatnonzero(filled)[~is_number] + 1).tolist()
    examples = text[filled][~is_number].head(3).tolist()
    if len(rows) > max(2, NUMERIC_TEXT_BAD * int(filled.sum())):
        log.warning("column %r holds numbers in %d of its %d filled rows and is read as categories (it also holds "
                    "e.g. %r); if it is numeric, fix those cells or list it in data.numeric_columns", col,
                    int(is_number.sum()), int(filled.sum()), examples)
        return
    raise ValueError(
        f"column {col!r} holds numbers in {int(is_number.sum())} of its {int(filled.sum())} filled rows, but "
        f"{'rows' if len(rows) > 1 else 'row'} {format_rows(rows)} (counted from 1) {'are' if len(rows) > 1 else 'is'} "
        f"no number{'s' if len(rows) > 1 else ''} (e.g. {examples!r}), so it would be read as "
        f"categories. Fix those cells (a blank cell is a missing value), or list {col!r} in "
        "data.categorical_columns to keep it as categories")


def schema_of(config: TabularConfig, df: pd.DataFrame) -> ModelSchema:
    """The :class:`ModelSchema` a pipeline fitted on ``df`` under ``config`` will have."""
    return ModelSchema(*infer_columns(config, df))
