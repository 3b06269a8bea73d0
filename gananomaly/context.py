"""A known condition per row (class, machine, hour bucket, a coarser image...): encoded as
extra input columns for the conditional GAN.

A 1-D context is categorical (one-hot over the categories seen in fit); a 2-D context is
numeric (standardised with the scaler fitted in fit). These functions return what they
fit; the estimator records it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gananomaly import data as _data
from gananomaly.explanations import category_str

__all__ = ["fit", "encode", "names", "from_table", "unseen_rows", "table_problems", "read_table"]


def fit(context, X: np.ndarray):
    """``(columns, categories, mean, scale)`` for the training rows ``X`` (all None
    without a context; ``categories`` for a categorical one, ``mean``/``scale`` for a numeric one)."""
    if context is None:
        return None, None, None, None
    if X.ndim != 2:
        raise ValueError("context= is supported for tabular (2-D) input only")
    if np.ndim(context) == 2:
        values = _numeric(context, X)
        mean, scale = _data.fit_scaler(values, what="context column")
        return _data.to_tensor(values, mean, scale), None, mean, scale
    keys = _keys(context, X)
    categories = sorted(set(keys.tolist()))
    return _onehot(keys, categories), categories, None, None


def encode(context, X: np.ndarray, categories: list[str] | None, mean: np.ndarray | None,
           scale: np.ndarray | None, fitted_names: list[str] | None = None) -> torch.Tensor | None:
    """The columns of ``context`` for scoring rows ``X`` with what :func:`fit` returned. A
    numeric context given as a DataFrame with named columns, to a detector that recorded the
    names it was fitted with (``fitted_names``), is read by name: in another order it is
    reordered, under other names it is refused (positions would pair a column with another's
    statistics)."""
    continuous = mean is not None
    if context is None:
        if categories is not None or continuous:
            raise ValueError("this detector was fitted with a context: pass context= (one value per row)")
        return None
    if categories is None and not continuous:
        raise ValueError("this detector was fitted without a context; do not pass context=")
    if X.ndim != 2:
        raise ValueError("context= is supported for tabular (2-D) input only")
    if continuous:
        given = names(context) if isinstance(context, pd.DataFrame) else None
        if fitted_names and given is not None and given != list(fitted_names):
            if sorted(given) != sorted(fitted_names):
                raise ValueError(f"context has the columns {given[:10]}, but the detector was fitted with "
                                 f"{list(fitted_names)[:10]}")
            context = context[list(fitted_names)]
        values = _numeric(context, X)
        if values.shape[1] != mean.shape[0]:
            raise ValueError(f"context has {values.shape[1]} columns, the detector was fitted with {mean.shape[0]}")
        return _data.to_tensor(values, mean, scale)
    keys = _keys(context, X, categories)
    unknown = sorted(set(keys.tolist()) - set(categories))
    if unknown:
        raise ValueError(f"context has values never seen in fit: {unknown[:10]}; known: {categories[:10]}")
    return _onehot(keys, categories)


def names(context) -> list[str] | None:
    """The column names ``context`` was given with: a pandas Series's name, a DataFrame's
    column names (all strings); None for anything else (an array, a list, unnamed columns).
    A model that records them can read its context from the same table as its features
    (the MLflow pyfunc, the batch job)."""
    if isinstance(context, pd.Series):
        return [context.name] if isinstance(context.name, str) and context.name else None
    if isinstance(context, pd.DataFrame):
        cols = list(context.columns)
        ok = cols and all(isinstance(c, str) and c for c in cols) and len(set(cols)) == len(cols)
        return cols if ok else None
    return None


def from_table(frame: pd.DataFrame, columns: list[str], categorical: bool):
    """The context held by ``columns`` of ``frame``, as fit took it: the one column (a
    Series) of a categorical context, the columns (a DataFrame) of a numeric one.

    Raises
    ------
    ValueError
        ``frame`` lacks one of ``columns`` (named).
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"input is missing the context column(s) {missing} the model was fitted with")
    repeated = [c for c in columns if int((frame.columns == c).sum()) > 1]
    if repeated:
        raise ValueError(f"input has the context column(s) {repeated} more than once")
    return frame[columns[0]] if categorical else frame[list(columns)]


def table_problems(frame: pd.DataFrame, columns: list[str], categories: list[str] | None
                   ) -> tuple[object, list[tuple[str, np.ndarray, str, str]]]:
    """(the context held by ``columns`` of ``frame`` as a detector takes it, its problems).

    ``categories``: those of a categorical context (its one column, values as given), None for
    a numeric one (its columns as float64, text read as numbers). Each problem is ``(column,
    mask of rows, what is wrong, a note)``: a missing value, a category never seen in training,
    a value that is no finite number. Those rows cannot be scored; the others can."""
    from gananomaly.explanations import numeric_cells

    ctx = from_table(frame, columns, categorical=categories is not None)
    problems = []
    if categories is None:
        converted = {}
        for col in columns:
            values, bad = numeric_cells(ctx[col], col, "context")
            bad = np.asarray(bad) | ~np.isfinite(values)
            if bad.any():
                problems.append((col, bad, "holds values that are no finite numbers", ""))
            converted[col] = np.where(bad, 0.0, values)
        return pd.DataFrame(converted, index=ctx.index), problems
    missing = ctx.isna().to_numpy()
    if missing.any():
        problems.append((columns[0], missing, "is missing", "every row needs its context"))
    unseen = np.zeros(len(ctx), dtype=bool)
    present = np.flatnonzero(~missing)
    unseen[present[unseen_rows(ctx.iloc[present], categories)]] = True
    if unseen.any():
        problems.append((columns[0], unseen, "holds values never seen in training",
                         f"the model knows {list(categories)[:10]}"))
    return ctx, problems


def read_table(frame: pd.DataFrame, columns: list[str], categories: list[str] | None):
    """The context of :func:`table_problems`; its first problem is a ValueError naming the
    column, the rows (counted from 1) and an example value."""
    ctx, problems = table_problems(frame, columns, categories)
    if problems:
        col, mask, what, note = problems[0]
        rows = np.flatnonzero(mask)
        value = frame[col].iloc[rows[0]]
        value = value.item() if isinstance(value, np.generic) else value
        example = "" if pd.isna(value) else f"; e.g. {value!r}"
        raise ValueError(f"context column {col!r} {what} in rows {(rows[:10] + 1).tolist()} (counted from 1{example})"
                         f"{'; ' + note if note else ''}")
    return ctx


def unseen_rows(context, categories: list[str]) -> np.ndarray:
    """Positions of the values of a categorical ``context`` (no missing value) whose category
    is not among ``categories`` (compared as :func:`encode` compares them)."""
    keys = _keys(context, np.empty((len(context), 0)), categories)
    return np.flatnonzero(~np.isin(keys, np.asarray(categories, dtype=object)))


def _key(v) -> str:
    """The category a context value names (:func:`gananomaly.explanations.category_str`: 3.0 is
    "3"; integer codes read from a column with a gap arrive as floats, numpy's too). A numpy
    float is written as numpy writes its own width, shortest: float32 0.1 is "0.1", as the
    Python float 0.1 is (not "0.10000000149011612")."""
    if isinstance(v, np.floating):
        return str(int(v)) if float(v).is_integer() else str(v)
    return category_str(v)


def _older_keys(v) -> tuple[str, ...]:
    """Other names of the value's category: how earlier versions named it (a model saved then
    recorded these), and for a number written as text (a file read as text) the number's own
    name ("1.0", as pandas writes an integer code from a column with a gap, is the category "1")."""
    older = (str(v),)
    if isinstance(v, np.floating):
        older += (category_str(float(v)),)
    elif isinstance(v, str):
        try:
            number = float(v)
        except ValueError:
            return older
        if np.isfinite(number):
            older += (category_str(number),)
    return older


def _keys(context, X: np.ndarray, known: list[str] | None = None) -> np.ndarray:
    raw = np.asarray(context)
    # numbers of a float dtype stay numpy scalars of that width (see _key); the rest as objects
    values = np.array(list(raw), dtype=object) if raw.dtype.kind == "f" and raw.ndim == 1 else raw.astype(object)
    if values.ndim != 1 or values.shape[0] != X.shape[0]:
        raise ValueError(f"context must be 1-D with one value per row ({X.shape[0]}), got shape {values.shape}")
    missing = [i for i, v in enumerate(values)  # None, NaN and pandas' missing markers (a nullable column's <NA>)
               if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and v != v)]
    if missing:
        raise ValueError(f"context contains missing values (None/NaN) at row {_data.row_indices(missing)}")
    keys = [_key(v) for v in values]
    if known is not None:  # a model whose categories were recorded as "3.0" still reads 3.0
        known_set = set(known)
        keys = [k if k in known_set else next((o for o in _older_keys(v) if o in known_set), k)
                for k, v in zip(keys, values)]
    return np.array(keys, dtype=object)


def _onehot(keys: np.ndarray, categories: list[str]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(categories)}
    onehot = torch.zeros(len(keys), len(categories))
    onehot[torch.arange(len(keys)), torch.tensor([index[k] for k in keys], dtype=torch.long)] = 1.0
    return onehot


def _numeric(context, X: np.ndarray) -> np.ndarray:
    """A numeric condition per row, e.g. the coarser image of a Laplacian pyramid."""
    try:
        values = np.asarray(context, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a 2-D context must be numeric: {exc}") from exc
    if values.ndim != 2 or values.shape[0] != X.shape[0]:
        raise ValueError(f"context must have one row per sample ({X.shape[0]}), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"context contains NaN or infinity at row "
                         f"{_data.row_indices(np.flatnonzero(~np.isfinite(values).all(axis=1)))}")
    return values
