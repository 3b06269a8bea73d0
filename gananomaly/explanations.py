"""Explanations per input column of a fitted table model, and the input schema they rest on.

A fitted model is a :class:`~gananomaly.GANAnomalyDetector` or a scikit-learn ``Pipeline``
of preprocessing (a ``ColumnTransformer`` of imputers, scalers and one-hot encoders) ending
in one. :meth:`GANAnomalyDetector.explain` ranks the features the detector sees; a
categorical column became several one-hot features, so here the contributions are summed
back onto the *input* columns, and the detector's expectation is mapped back into the
column's units (or the category it expected most).

The input schema (:class:`ModelSchema`, :func:`model_schema`, :func:`prepare_frame`: which
columns a fitted model needs and how their cells are converted) lives here because the
explanations need it and so do consumers that must not depend on the jobs in
``gananomaly.pipelines`` (the MLflow pyfunc); the pipelines import it from here. The module
runs a little over 400 lines because the schema and the explanations are read together: the
explanations fold features back onto exactly the columns the schema names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ModelSchema", "model_schema", "prepare_frame", "model_input", "format_rows", "explain_columns",
           "column_contributions", "top_columns", "top_frame", "input_columns", "categorical_text", "category_str",
           "numeric_cells", "blank_cells", "column_parts"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- schema
@dataclass
class ModelSchema:
    """The input a fitted model expects.

    Attributes
    ----------
    numeric : list of str
        Columns converted to numbers.
    categorical : list of str
        Columns converted to strings.
    categories : dict of str to set
        Categories seen in training per categorical column (for unseen-category reports).
    named : bool
        False when the model was fitted on an unnamed array: then ``numeric`` holds
        positions as strings and the input's columns are taken in order.
    typed : dict of str to dict
        Categorical columns whose encoder was fitted on categories that are not text (numbers):
        each category's text (:func:`category_str`) -> the category, so that
        :func:`model_input` hands the encoder the values it knows.
    parts : list of (str, transformer, list of str)
        A ``ColumnTransformer`` model's parts (:func:`column_parts`): each transformer's name,
        the transformer, and the input columns it reads (empty for other models).
    context : list of str
        The columns holding each row's context, for a detector fitted with a named one (read
        by :func:`gananomaly.context.table_problems`; no features).
    context_categories : list of str or None
        The categories of a categorical context (None: numeric, or no context).
    """

    numeric: list[str]
    categorical: list[str]
    categories: dict[str, set] = field(default_factory=dict)
    named: bool = True
    typed: dict[str, dict[str, Any]] = field(default_factory=dict)
    parts: list[tuple[str, Any, list[str]]] = field(default_factory=list, repr=False, compare=False)
    context: list[str] = field(default_factory=list)
    context_categories: list[str] | None = None

    @property
    def columns(self) -> list[str]:
        """The feature columns."""
        return list(self.numeric) + list(self.categorical)

    @property
    def required(self) -> list[str]:
        """Every column an input must hold: the features, then the context columns."""
        features = self.columns
        return features + [c for c in self.context if c not in features]

    @property
    def text_columns(self) -> list[str]:
        """Columns read as text from a file: the categorical ones, and a categorical context."""
        return list(self.categorical) + (list(self.context) if self.context_categories is not None else [])

    @property
    def owners(self) -> dict[str, list[str]]:
        """Each transformer's name -> its input columns."""
        return {name: cols for name, _, cols in self.parts}

    def encoder_of(self, column: str) -> tuple[Any, int]:
        """``(the one-hot encoder of a categorical column, the column's position in it)``;
        ``(None, 0)`` when the column has none."""
        for _, trans, cols in self.parts:
            enc = _one_hot(trans)
            if enc is not None and column in cols:
                return enc, cols.index(column)
        return None, 0


def model_schema(model) -> ModelSchema:
    """The input columns of a fitted detector or ``Pipeline`` ending in one.

    For a pipeline that starts with a ``ColumnTransformer`` the columns of every transformer
    are required; those of a transformer containing a ``OneHotEncoder`` are categorical, the
    rest numeric. Otherwise every column the model was fitted on is numeric.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    det = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(first, ColumnTransformer) and hasattr(first, "transformers_"):
        schema = _column_transformer_schema(first)
    elif getattr(first, "feature_names_in_", None) is not None:
        schema = ModelSchema([str(n) for n in first.feature_names_in_], [])
    else:
        schema = ModelSchema([str(i) for i in range(int(first.n_features_in_))], [], named=False)
    names = getattr(det, "context_names_", None)
    if names:
        schema.context = [str(n) for n in names]
        cats = getattr(det, "context_categories_", None)
        schema.context_categories = None if cats is None else list(cats)
    return schema


def _one_hot(trans):
    """The ``OneHotEncoder`` of a column transformer's part (itself or a step of its pipeline), or None."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    steps = [t for _, t in trans.steps] if isinstance(trans, Pipeline) else [trans]
    return next((t for t in steps if isinstance(t, OneHotEncoder)), None)


def column_parts(ct) -> list[tuple[str, Any, list[str]]]:
    """``(name, transformer, input columns)`` of every part of a fitted ``ColumnTransformer``
    that reads columns (dropped and empty parts left out), its columns named however they were
    selected: by name, by position, by a boolean mask, or by a slice of names or positions."""
    names = getattr(ct, "feature_names_in_", None)
    names = None if names is None else [str(n) for n in names]
    parts = []
    for name, trans, cols in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        selected = _selected_columns(cols, names)
        if selected:
            parts.append((name, trans, selected))
    return parts


def _selected_columns(cols, names: list[str] | None) -> list[str]:
    def by_position():
        if names is None:
            raise ValueError("the model's ColumnTransformer selects columns by position; it needs named "
                             "columns to score tables")
        return names

    if isinstance(cols, slice):
        if isinstance(cols.start, str) or isinstance(cols.stop, str):  # a slice of names includes its end
            every = by_position()
            start = 0 if cols.start is None else every.index(cols.start)
            stop = len(every) if cols.stop is None else every.index(cols.stop) + 1
            return every[start:stop:cols.step]
        return by_position()[cols]
    values = [cols] if isinstance(cols, str) or np.ndim(cols) == 0 else list(cols)
    if all(isinstance(v, str) for v in values):
        return values
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [n for n, chosen in zip(by_position(), values) if chosen]
    return [by_position()[int(v)] for v in values]


def _column_transformer_schema(first) -> ModelSchema:
    numeric: list[str] = []
    categorical: list[str] = []
    categories: dict[str, set] = {}
    typed: dict[str, dict[str, Any]] = {}
    parts = [part for part in column_parts(first) if part[0] != "remainder"]
    for _, trans, cols in parts:
        enc = _one_hot(trans)
        if enc is None:
            numeric.extend(cols)
            continue
        categorical.extend(cols)
        for col, cats in zip(cols, enc.categories_):
            known = [c for c in cats if not pd.isna(c)]
            categories[col] = {category_str(c) for c in known}
            if not all(isinstance(c, str) for c in known):
                typed[col] = {category_str(c): c for c in known}
    if first.remainder != "drop":
        raise ValueError("the model's ColumnTransformer passes the remaining columns through; batch scoring "
                         "needs remainder='drop' to know the required columns")
    return ModelSchema(numeric, categorical, categories, typed=typed, parts=parts)


def model_input(frame: pd.DataFrame, schema: ModelSchema) -> pd.DataFrame:
    """``frame`` (converted by :func:`prepare_frame`: categories as text) with the categorical
    columns of ``schema.typed`` back in the type their encoder was fitted on: a one-hot encoder
    fitted on the numbers 1, 2, 3 reads the text "2" as a category it never saw (all zeros).
    A value that is no known category stays unknown to the encoder: its number, or (text in a
    column of numbers) a number above every known category."""
    if not schema.typed:
        return frame
    frame = frame.copy()
    for col, lookup in schema.typed.items():
        if col not in frame.columns:
            continue
        numbers = [c for c in lookup.values()
                   if isinstance(c, (Integral, float, np.floating)) and not isinstance(c, (bool, np.bool_))]
        unknown = (max(numbers) + 1) if len(numbers) == len(lookup) and numbers else None

        def value(v, lookup=lookup, unknown=unknown):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return np.nan
            if v in lookup:
                return lookup[v]
            if unknown is None:
                return v
            try:
                number = float(v)
            except (TypeError, ValueError):
                return unknown
            return int(number) if number.is_integer() else number

        frame[col] = pd.Series([value(v) for v in frame[col]], index=frame.index, dtype=object).infer_objects()
    return frame


def format_rows(rows: list[int], limit: int = 10) -> str:
    """``"3, 7, 12"``; after ``limit`` numbers, ``", ... (N in all)"``."""
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def prepare_frame(df: pd.DataFrame, schema: ModelSchema, *, row_numbers: np.ndarray | None = None,
                  on_bad_rows: str = "error", where: str = "input", hint: str | None = None,
                  missing_is_bad: bool = False) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Convert the model's columns of ``df`` to the types it was fitted on.

    Numeric columns become float64; a non-empty cell that is not a finite number is a bad
    value. Categorical columns become Python strings (missing cells stay missing).

    Parameters
    ----------
    df : DataFrame
        Must contain every column of ``schema`` (other columns are ignored).
    schema : ModelSchema
    row_numbers : ndarray of int, optional
        The number of each row in the source, used in messages (default 1, 2, ...).
    on_bad_rows : {"error", "skip"}
        ``"error"``: raise ValueError naming the column, the rows and the values.
        ``"skip"``: drop those rows.
    where : str
        Name of the source in messages.
    hint : str, optional
        What the error tells the user to do (default: fix the values or skip the rows).
    missing_is_bad : bool, default=False
        Count a missing number as a bad value too (for a model without an imputer).

    Returns
    -------
    (frame, keep, bad)
        ``frame``: the converted feature columns (rows with bad values dropped);
        ``keep``: boolean mask of kept rows of ``df``; ``bad``: column -> list of bad row numbers.
    """
    if row_numbers is None:
        row_numbers = np.arange(1, len(df) + 1)
    missing = [c for c in schema.columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where} is missing required column(s) {missing}")
    out = {}
    bad_mask = np.zeros(len(df), dtype=bool)
    bad: dict[str, list[int]] = {}
    examples: dict[str, list[Any]] = {}
    for col in schema.numeric:
        s = df[col]
        values, col_bad = numeric_cells(s, col, where)
        if missing_is_bad:
            col_bad = col_bad | np.isnan(values)
        if col_bad.any():
            bad[col] = row_numbers[col_bad].tolist()
            examples[col] = s[col_bad].head(3).tolist()
            bad_mask |= col_bad
        out[col] = values
    for col in schema.categorical:
        out[col] = categorical_text(df[col])
    if bad:
        if on_bad_rows == "error":
            details = "; ".join(f"column {c!r}: rows {format_rows(r)} (e.g. {examples[c]!r})" for c, r in bad.items())
            hint = hint or "Fix them or skip those rows (on_bad_rows='skip', --on-bad-rows skip)"
            raise ValueError(f"{where}: values that are not finite numbers in numeric column(s): {details}. {hint}")
        log.warning("%s: skipping %d row(s) with unparseable numbers: %s", where, int(bad_mask.sum()),
                    "; ".join(f"{c!r} rows {format_rows(r)}" for c, r in bad.items()))
    frame = pd.DataFrame(out, index=df.index, columns=schema.columns)
    keep = ~bad_mask
    if bad_mask.any():
        frame = frame.loc[keep]
    return frame, keep, bad


def blank_cells(s: pd.Series) -> np.ndarray:
    """Mask of the cells of a column that hold no value: missing, or blank text (the table
    pipeline reads both as missing and imputes them)."""
    text = s.astype(object)
    return text.isna().to_numpy() | text.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(bool)


def numeric_cells(s: pd.Series, col: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells that are no finite number) of one numeric column; a blank
    text cell is missing (NaN, not flagged: the pipeline imputes it)."""
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        raise ValueError(f"{where}: column {col!r} has type {s.dtype}, but the model expects numbers")
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        values = s.astype(np.float64).to_numpy(copy=True)
        return values, np.isinf(values)
    text = s.astype(object)
    blank = blank_cells(text)
    values = pd.to_numeric(text.where(~blank, None), errors="coerce").astype(np.float64).to_numpy(copy=True)
    return values, (np.isnan(values) & ~blank) | np.isinf(values)


def categorical_text(s: pd.Series) -> np.ndarray:
    """One categorical column as an object array of Python strings, NaN where missing (the
    imputers' missing value: a column missing in every row of a chunk or a request held None,
    which they do not impute, so those rows were scored as of an unknown category)."""
    obj = s.astype(object)
    na = obj.isna().to_numpy()
    kind = pd.api.types.infer_dtype(obj[~na], skipna=True)
    if pd.api.types.is_string_dtype(s) and kind in ("string", "empty"):
        return np.where(na, np.nan, obj.to_numpy()).astype(object)
    if kind == "mixed":  # lists, mappings or arrays (a Parquet list or struct column) are no categories
        nested = [i for i, v in enumerate(obj) if isinstance(v, (list, tuple, dict, set, np.ndarray))]
        if nested:
            raise ValueError(f"categorical column {s.name!r} holds lists or mappings, not categories (row "
                             f"{nested[0] + 1}, counted from 1: {obj.iloc[nested[0]]!r})")
    return np.where(na, np.nan, obj.map(category_str)).astype(object)


def category_str(v: Any) -> Any:
    """The category a value names (None stays None): its string, a whole-valued float as its
    integer (3.0 read from a column with gaps is the category "3")."""
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ---------------------------------------------------------------------------------- explanations
@dataclass
class _Pass:
    """One pass of the detector's ``explain`` over a table, folded onto its input columns."""

    rows: np.ndarray  # positions in the input of the rows explained
    columns: list[str]  # input columns, in the model's order
    contributions: np.ndarray  # (n_rows, n_columns): summed over each column's features
    first_rank: np.ndarray  # (n_rows, n_columns): best rank of the column's features (ties)
    expected_t: np.ndarray  # (n_rows, n_features): the detector's expectation per feature
    names: list[str]  # the detector's features
    source: list[str]  # the input column of every feature
    pre: Any  # the preprocessing (None for a bare detector)
    schema: ModelSchema


def _is_pipeline(model) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(model, Pipeline) and len(model.steps) > 1


def _explain_pass(model, data, context=None) -> _Pass:
    from sklearn.pipeline import Pipeline

    if _is_pipeline(model):
        schema = model_schema(model)
        frame, keep, _ = prepare_frame(data, schema)
        if context is not None and not keep.all():  # the context of the rows kept
            context = context.iloc[np.flatnonzero(keep)] if hasattr(context, "iloc") \
                else np.asarray(context)[np.flatnonzero(keep)]
        pre, det = model[:-1], model.steps[-1][1]
        Xt = pre.transform(model_input(frame, schema))
        names = [str(n) for n in pre.get_feature_names_out()]
        source = feature_columns(names, schema)
        columns = [c for c in schema.columns if c in set(source)]
    else:
        det = model.steps[-1][1] if isinstance(model, Pipeline) else model
        pre, schema, Xt = None, None, data
        keep = np.ones(len(data), dtype=bool)
        source = columns = names = input_columns(det)
    long = det.explain(Xt, context=context)
    n = int(keep.sum())
    feat = np.array([_feature_index(f, names) for f in long["feature"].unique()])
    lookup = dict(zip(long["feature"].unique(), feat))
    r = long["row"].to_numpy()
    j = long["feature"].map(lookup).to_numpy()
    contrib_t = np.zeros((n, len(names)))
    expected_t = np.zeros((n, len(names)))
    rank_t = np.zeros((n, len(names)), dtype=np.int64)
    contrib_t[r, j], expected_t[r, j], rank_t[r, j] = long["contribution"], long["expected"], long["rank"]
    col_of = {c: k for k, c in enumerate(columns)}
    member = np.zeros((len(names), len(columns)))
    member[np.arange(len(names)), [col_of[s] for s in source]] = 1.0
    first_rank = np.full((n, len(columns)), np.iinfo(np.int64).max)
    for k, s in enumerate(source):
        np.minimum(first_rank[:, col_of[s]], rank_t[:, k], out=first_rank[:, col_of[s]])
    return _Pass(np.flatnonzero(keep), columns, contrib_t @ member, first_rank, expected_t, names, source, pre,
                 schema)


def _ranking(p: _Pass) -> np.ndarray:
    """Per row, the input columns' positions by contribution, largest first (ties: the column
    whose best feature ranked first in the detector's own ranking)."""
    order = np.lexsort((p.first_rank, -p.contributions), axis=1) if p.contributions.size else \
        np.zeros(p.contributions.shape, dtype=np.int64)
    return order


def column_contributions(model, X, *, context=None) -> pd.DataFrame:
    """Every input column's contribution to each row's anomaly score.

    Parameters
    ----------
    model : fitted GANAnomalyDetector, or Pipeline of preprocessing ending in one
    X : DataFrame (a pipeline) or array-like (a bare detector)
    context : array-like, optional
        Each row's context, for a detector fitted with one.

    Returns
    -------
    DataFrame of shape (n_rows, n_columns): rows in ``X``'s order (index 0..n-1), one column
    per input column of the model. A column's contribution is the sum of the detector's
    per-feature contributions (:meth:`GANAnomalyDetector.explain`) over the features it
    became (a categorical column's one-hot group); larger = more responsible.
    """
    p = _explain_pass(model, X, context)
    return pd.DataFrame(p.contributions, columns=p.columns)


def top_columns(model, X, k: int, *, context=None) -> pd.DataFrame:
    """Each row's ``k`` most responsible input columns and their contributions.

    Parameters
    ----------
    model : fitted GANAnomalyDetector, or Pipeline of preprocessing ending in one
    X : DataFrame (a pipeline) or array-like (a bare detector)
    k : int
        How many columns per row, 1 to the number of input columns.
    context : array-like, optional
        Each row's context, for a detector fitted with one.

    Returns
    -------
    DataFrame with columns ``explain_1_column``, ``explain_1_contribution``, ...,
    ``explain_k_column``, ``explain_k_contribution``; rows in ``X``'s order, index 0..n-1.
    Contributions as :func:`column_contributions` defines them (larger = more responsible),
    ``explain_1`` the largest.

    Raises
    ------
    ValueError
        ``k`` is not an int in [1, number of input columns].
    """
    _check_count("k", k)
    columns = input_columns(model)
    if k > len(columns):
        raise ValueError(f"k={k} is larger than the number of input columns of the model ({len(columns)})")
    if len(X) == 0:
        return top_frame(np.zeros((0, len(columns))), columns, int(k))
    p = _explain_pass(model, X, context)
    return top_frame(p.contributions, p.columns, int(k), _ranking(p))


def input_columns(model) -> list[str]:
    """The input columns explanations name: a pipeline's input columns (:func:`model_schema`),
    a bare detector's features (``feature_names_in_``, else ``x0``, ``x1``, ...)."""
    if _is_pipeline(model):
        return model_schema(model).columns
    det = _detector(model)
    return [str(n) for n in getattr(det, "feature_names_in_", [f"x{j}" for j in range(int(det.n_features_in_))])]


def top_frame(contributions: np.ndarray, columns: list[str], k: int, order: np.ndarray | None = None) -> pd.DataFrame:
    """The ``explain_<i>_column`` / ``explain_<i>_contribution`` frame of a contribution
    matrix (rows x ``columns``); ``order``: each row's column positions, largest first."""
    if order is None:
        order = np.argsort(-contributions, axis=1, kind="stable")
    order = order[:, :k]
    names = np.asarray(columns, dtype=object)
    out: dict[str, Any] = {}
    for i in range(k):
        out[f"explain_{i + 1}_column"] = names[order[:, i]] if len(order) else np.empty(0, dtype=object)
        out[f"explain_{i + 1}_contribution"] = np.take_along_axis(contributions, order[:, i : i + 1], axis=1)[:, 0]
    return pd.DataFrame(out)


def explain_columns(model, data, *, top: int | None = None, context=None) -> pd.DataFrame:
    """Why each row of a table scores as it does, per *input* column.

    Returns
    -------
    Long DataFrame: ``row`` (position in ``data``), ``rank`` (1 = largest contribution),
    ``column``, ``contribution``, ``value`` (as given), ``expected`` (what the model expected:
    a number in the column's units, or the category whose one-hot feature it expected most)
    and ``imputed`` (the value was missing and the pipeline filled it in).
    """
    if top is not None:
        _check_count("top", top)
    if _is_pipeline(model) and not isinstance(data, pd.DataFrame):
        raise TypeError(f"a pipeline's explanation needs a DataFrame with its input columns, got {type(data).__name__}")
    if len(data) == 0:
        return pd.DataFrame({"row": pd.Series(dtype=np.int64), "rank": pd.Series(dtype=np.int64),
                             "column": pd.Series(dtype=object), "contribution": pd.Series(dtype=np.float64),
                             "value": pd.Series(dtype=object), "expected": pd.Series(dtype=object),
                             "imputed": pd.Series(dtype=bool)})
    p = _explain_pass(model, data, context)
    n, m = p.contributions.shape
    order = _ranking(p)
    width = m if top is None else min(int(top), m)
    order = order[:, :width]
    local = np.repeat(np.arange(n), width)
    cols = order.ravel()
    names = np.asarray(p.columns, dtype=object)
    expected = _expected_by_column(p)
    values = _values_by_column(data, p)
    value = [values[c][r] for r, c in zip(local, cols)]
    return pd.DataFrame({"row": p.rows[local], "rank": np.tile(np.arange(1, width + 1), n), "column": names[cols],
                         "contribution": p.contributions[local, cols], "value": value,
                         "expected": [expected[c][r] for r, c in zip(local, cols)],
                         "imputed": blank_cells(pd.Series(value, dtype=object))})


def _values_by_column(data, p: _Pass) -> list:
    """Per input column (by position), the explained rows' values as given."""
    if isinstance(data, pd.DataFrame) and p.pre is not None:
        original = data.iloc[p.rows]
        return [original[c].tolist() for c in p.columns]
    values = data.to_numpy() if isinstance(data, pd.DataFrame) else np.asarray(data)
    return [values[:, j].tolist() for j in range(len(p.columns))]


def _expected_by_column(p: _Pass) -> list:
    """Per input column (by position), what the model expected for every explained row."""
    if p.pre is None:
        return [p.expected_t[:, j].tolist() for j in range(len(p.columns))]
    by_name = _expected_values(p.pre, p.names, p.source, p.schema, p.expected_t)
    return [by_name[c] for c in p.columns]


def _detector(model):
    from sklearn.pipeline import Pipeline

    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _check_count(name: str, value) -> None:
    """``value`` must be a positive int (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _feature_index(feature, names: list[str]) -> int:
    """Position of a detector feature: its name among ``names``, or ``x<j>`` when the
    detector was fitted on an unnamed array."""
    f = str(feature)
    if f in names:  # a named feature first: a column may itself be called "x2"
        return names.index(f)
    if f.startswith("x") and f[1:].isdigit() and int(f[1:]) < len(names):
        return int(f[1:])
    raise ValueError(f"the detector explained a feature {f!r} that is not among its input columns {names}")


def feature_columns(names: list[str], schema: ModelSchema) -> list[str]:
    """The input column each preprocessed feature comes from (``numeric__amount`` ->
    ``amount``; ``categorical__device_pos`` -> ``device``, the longest matching column).
    The transformer named in the feature's prefix decides (:attr:`ModelSchema.owners`: each
    transformer's input columns), so a numeric column ``plan_pro`` and the category ``pro`` of a
    column ``plan`` are told apart."""
    owners = schema.owners
    out = []
    for n in names:
        prefix, tail = n.split("__", 1) if "__" in n else ("", n)
        cols = owners.get(prefix)
        if cols is None:
            if tail in schema.numeric or tail in schema.categorical:
                out.append(tail)
                continue
            cols = schema.categorical
        elif tail in cols:
            out.append(tail)
            continue
        matches = [c for c in cols if tail.startswith(f"{c}_")]
        out.append(max(matches, key=len) if matches else tail)
    return out


def _to_input_units(pre, schema: ModelSchema, columns: list[str], block: np.ndarray) -> np.ndarray:
    """The numeric features ``block`` (the transformed ``columns``) in the input's units: through
    the inverse of the transformer that made them (a column transformer's part for exactly those
    columns, or a preprocessing of invertible steps only). NaN, with a warning, when no such
    inverse exists: a value in the model's scaled units would read as a real amount."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    def inverse_of(steps: list):
        """The inverse of a chain of transformers; imputers count as identity (the expected value
        of a filled cell is the model's, in the same units); None when a step has no inverse."""
        chain = [t for t in steps if "Imputer" not in type(t).__name__]
        if any(isinstance(t, (OneHotEncoder, ColumnTransformer)) or not hasattr(t, "inverse_transform")
               for t in chain):
            return None

        def apply(values):
            for t in reversed(chain):
                values = t.inverse_transform(values)
            return values
        return apply

    def inverted(inverse, part):
        if inverse is None:
            return None
        try:
            return np.asarray(inverse(part), dtype=np.float64)
        except (ValueError, TypeError, AttributeError):
            return None

    out = np.full(block.shape, np.nan)
    done = np.zeros(len(columns), dtype=bool)
    step = pre.steps[0][1] if len(pre.steps) == 1 else None
    if isinstance(step, ColumnTransformer):
        # each transformer's columns through that transformer's own inverse (a StandardScaler on
        # some columns and a MinMaxScaler on others both invert)
        for _, trans, cols in schema.parts:
            pos = [columns.index(c) if c in columns else -1 for c in cols]
            if not pos or min(pos) < 0 or done[pos].any():
                continue
            chain = [] if trans == "passthrough" else [t for _, t in trans.steps] if isinstance(trans, Pipeline) \
                else [trans]
            values = inverted(inverse_of(chain), block[:, pos])
            if values is not None and values.shape == (block.shape[0], len(pos)):
                out[:, pos] = values
                done[pos] = True
    else:
        values = inverted(inverse_of([t for _, t in pre.steps]), block)
        if values is not None and values.shape == block.shape:
            return values
    if not done.all():
        log.warning("explain: the preprocessing has no inverse for the numeric columns %s; their 'expected' values "
                    "are left empty (NaN) rather than given in the model's scaled units",
                    [c for c, d in zip(columns, done) if not d][:10])
    return out


def _expected_values(pre, names: list[str], source: list[str], schema: ModelSchema, expected_t: np.ndarray) -> dict:
    """Per input column, the value the model expected for every row: numeric features
    mapped back through their scaler, categorical ones as the most expected category."""
    out: dict[str, list] = {}
    numeric_idx = [j for j, c in enumerate(source) if c in schema.numeric]
    if numeric_idx:
        block = _to_input_units(pre, schema, [source[j] for j in numeric_idx], expected_t[:, numeric_idx])
        for k, j in enumerate(numeric_idx):
            out[source[j]] = block[:, k].tolist()
    for col in schema.categorical:
        idx = [j for j, c in enumerate(source) if c == col]
        if not idx:
            continue
        cats = [names[j].split("__", 1)[-1][len(col) + 1:] for j in idx]
        values = expected_t[:, idx]
        enc, i = schema.encoder_of(col)
        infrequent = getattr(enc, "infrequent_categories_", None)
        if infrequent is not None and infrequent[i] is not None:
            group = f"(infrequent: {', '.join(category_str(c) for c in infrequent[i])})"
            cats = [group if c == "infrequent_sklearn" else c for c in cats]
        drop = getattr(enc, "drop_idx_", None)
        if drop is not None and drop[i] is not None:
            # the dropped category has no feature: its one-hot value is what the others leave of 1
            cats.append(category_str(enc.categories_[i][int(drop[i])]))
            values = np.column_stack([values, 1.0 - values.sum(axis=1)])
        best = np.argmax(values, axis=1)
        out[col] = [cats[b] for b in best]
    return out
