"""The ``python_function`` side of the gananomaly MLflow flavor: what ``predict`` returns.

:class:`GANAnomalyPyfunc` is what ``mlflow.pyfunc.load_model`` (and ``mlflow models serve``)
hands out for a model of the :mod:`gananomaly.mlflow` flavor. Its ``predict`` takes a DataFrame,
an array, a list of rows or a one-tensor dict, converts numeric columns that arrive as text,
scores with :func:`score_frame` (the estimator's one scoring output) and labels rows holding a
category never seen in training -1, with a warning naming the column. With
``params={"explain": K}`` it adds each row's top-K columns (:func:`explanations`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["EXPLAIN_PARAM", "GANAnomalyPyfunc", "column_steps", "context_columns", "context_of", "example_frame",
           "explain_count", "explanations",
           "infer_pyfunc_signature", "input_columns",
           "convert_columns", "score_frame", "split_model", "unseen_categories"]


def split_model(model) -> tuple[Any, Any]:
    """(preprocessing pipeline or None, detector)."""
    from sklearn.pipeline import Pipeline

    from gananomaly.estimator import GANAnomalyDetector

    if isinstance(model, Pipeline):
        det = model.steps[-1][1]
        if not isinstance(det, GANAnomalyDetector):
            raise TypeError(f"the last step of the pipeline must be a GANAnomalyDetector, got {type(det).__name__}")
        return (model[:-1] if len(model.steps) > 1 else None), det
    if not isinstance(model, GANAnomalyDetector):
        raise TypeError(f"gananomaly.mlflow saves a GANAnomalyDetector or a Pipeline ending in one, "
                        f"got {type(model).__name__}")
    return None, model


def score_frame(model, X, context=None) -> pd.DataFrame:
    """The pyfunc output for ``X``: anomaly scores per component, ``score`` and ``label``.

    Parameters
    ----------
    model : fitted GANAnomalyDetector or Pipeline ending in one
    X : array-like or DataFrame
    context : Series or DataFrame, optional
        Each row's context (:func:`context_of`), for a detector fitted with one; by default
        read from ``X``'s columns when the detector recorded their names.

    Returns
    -------
    DataFrame with columns ``discriminator``, ``reconstruction``, ``latent``, ``knn``, ``combined`` (higher = more
    anomalous), ``score`` (= ``score_samples``) and ``label`` (+1/-1, = ``predict``).
    """
    from gananomaly.estimator import empty_score_table

    prep, det = split_model(model)
    if len(X) == 0:  # one row per input row: none
        out = empty_score_table()
        out.index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(0)
        return out
    names = context_columns(model)
    if names is not None and isinstance(X, pd.DataFrame):
        if context is None:
            context = context_of(model, X)
        features = input_columns(model) or []
        X = X.drop(columns=[c for c in names if c in X.columns and c not in features])
    Xt = prep.transform(X) if prep is not None else X
    out = det.score_table(Xt, context=context)
    det._finite(out["score"].to_numpy())  # a served NaN score would read as an inlier
    out.index = X.index if isinstance(X, pd.DataFrame) else pd.RangeIndex(len(out))
    return out


def input_columns(model) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def context_columns(model) -> list[str] | None:
    """The input table's columns that hold the context of a detector fitted with a named one
    (a pandas Series or DataFrame); None otherwise."""
    names = getattr(split_model(model)[1], "context_names_", None)
    return None if names is None else [str(n) for n in names]


def context_of(model, data: pd.DataFrame):
    """The context a model fitted with a named one reads from the table ``data``: its one
    column (categories, as given) or its columns (numbers, as float64).

    Raises
    ------
    ValueError
        A context column is missing, holds a missing value, a category never seen in training
        or (numeric) a value that is no finite number: naming the column and its rows
        (counted from 1).
    """
    from gananomaly import context as _context

    categories = getattr(split_model(model)[1], "context_categories_", None)
    return _context.read_table(data, context_columns(model), categories)


class GANAnomalyPyfunc:
    """What ``mlflow.pyfunc.load_model`` returns (inside a ``PyFuncModel``)."""

    def __init__(self, model):
        self.model = model

    def get_raw_model(self):
        """The fitted detector or pipeline."""
        return self.model

    def predict(self, data, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Scores of ``data`` (a DataFrame, ndarray or list of rows); see the module docstring.

        Bad input raises MLflow's invalid-parameter error carrying our message, so a model
        server answers HTTP 400 with it instead of a generic "unexpected error"."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            k = explain_count(params)
            X, ctx, out = self._predict(data)
            if k is not None:
                out = pd.concat([out, explanations(self.model, X, k, out.index, ctx)], axis=1)
            return out
        except (ValueError, TypeError, KeyError) as exc:
            raise MlflowException(f"gananomaly: {exc}", error_code=INVALID_PARAMETER_VALUE) from exc

    def _predict(self, data) -> tuple[Any, Any, pd.DataFrame]:
        """(the input as the model takes it, its context (None without one), its score table)."""
        from gananomaly.data import check_table

        prep, det = split_model(self.model)
        ctx = None
        if context_columns(self.model) is not None:
            if not isinstance(data, pd.DataFrame):
                raise ValueError(f"this model reads each row's context from the columns {context_columns(self.model)}: "
                                 f"send a table (DataFrame) with them, got {type(data).__name__}")
            ctx = context_of(self.model, data)
        # a bare table detector's input is checked here, its rows counted from 1 (a request's, as
        # the pipeline's are); once, before anything converts it
        check_rows = prep is None and getattr(det, "image_shape_", None) is None
        columns = input_columns(self.model)
        if isinstance(data, pd.DataFrame):
            if columns is not None:
                missing = [c for c in columns if c not in data.columns]
                if missing:
                    raise ValueError(f"input is missing the columns {missing[:10]} the model was trained on")
                X = data[columns]
            else:
                check_table(data, rows_from=1)  # names a column that is no number (to_numpy's error named none)
                check_rows = False
                X = data.to_numpy(dtype=np.float64)
        elif isinstance(data, dict):
            if len(data) != 1:
                raise ValueError(f"expected one input tensor, got {sorted(data)}")
            X = np.asarray(next(iter(data.values())), dtype=np.float64)
        else:
            X = np.asarray(data, dtype=np.float64)
            if columns is not None:
                X = pd.DataFrame(X, columns=columns)
        given, X = X, convert_columns(self.model, X)
        if check_rows or (prep is not None and isinstance(X, pd.DataFrame) and not _imputes(prep)
                          and all(pd.api.types.is_numeric_dtype(t) for t in X.dtypes)):
            # a pipeline that fills in nothing passes a missing value on to the detector, which
            # would name the column by position and count rows from 0: named here, as the input's
            check_table(X, rows_from=1)
        out = score_frame(self.model, X, ctx)
        unseen, counts = unseen_categories(self.model, X, given)
        if unseen.any():
            # all-zero one-hot codes can look normal: such rows are outliers by definition (by
            # position: the caller's index may repeat labels)
            out.iloc[np.flatnonzero(unseen), out.columns.get_loc("label")] = -1
            warnings.warn(f"{int(unseen.sum())} row(s) hold categories never seen in training, labelled -1: "
                          + "; ".join(f"column {c!r}: {n} row(s) (e.g. {ex!r})" for c, (n, ex) in counts.items()),
                          UserWarning, stacklevel=2)
        return X, ctx, out


#: The ``predict`` parameter asking for each row's top-K columns (see :func:`explanations`).
EXPLAIN_PARAM = "explain"


def explain_count(params: dict[str, Any] | None) -> int | None:
    """K of ``params={"explain": K}`` (None when absent or None).

    Raises
    ------
    ValueError
        K is not a positive int (a bool, float or string is refused, not converted).
    """
    k = (params or {}).get(EXPLAIN_PARAM)
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"params[{EXPLAIN_PARAM!r}] must be a positive int (how many columns to explain per "
                         f"row), got {k!r}")
    return int(k)


def explanations(model, X, k: int, index: pd.Index, context=None) -> pd.DataFrame:
    """Each row's ``k`` most responsible columns and their contributions, indexed like the scores:
    ``explain_1_column``, ``explain_1_contribution``, ... (:func:`gananomaly.explanations.top_columns`:
    per original input column for a table pipeline, one-hot groups summed; per feature for a
    bare detector)."""
    from gananomaly.explanations import top_columns

    _, det = split_model(model)
    if getattr(det, "image_shape_", None) is not None:
        raise ValueError(f"params[{EXPLAIN_PARAM!r}]: explanations are per table column; this model was fitted "
                         "on images (use its anomaly maps)")
    try:
        frame = top_columns(model, X, k, context=context)
    except ValueError as exc:
        raise ValueError(f"params[{EXPLAIN_PARAM!r}]: {exc}") from exc
    frame.index = index
    return frame


def _imputes(prep) -> bool:
    """Whether a preprocessing pipeline holds a scikit-learn imputer (at any depth)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    stack = [prep]
    while stack:
        step = stack.pop()
        if type(step).__module__.startswith("sklearn.impute"):
            return True
        if isinstance(step, Pipeline):
            stack += [s for _, s in step.steps]
        elif isinstance(step, ColumnTransformer):
            stack += [t for _, t, _ in getattr(step, "transformers_", step.transformers)]
    return False


def column_steps(model):
    """``(transformer, its last step, input columns)`` of every part of the column transformers in
    a pipeline's preprocessing (:func:`gananomaly.explanations.column_parts`: columns named
    however they were selected)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from gananomaly.explanations import column_parts

    for _, step in model.steps[:-1]:
        if isinstance(step, ColumnTransformer) and hasattr(step, "transformers_"):
            for _, trans, cols in column_parts(step):
                yield trans, (trans.steps[-1][1] if isinstance(trans, Pipeline) else trans), cols


def convert_columns(model, X):
    """``X`` with the columns of a pipeline's preprocessing in the types it was fitted on, as the
    batch job reads them: numeric columns (every transformer but a one-hot encoder) as float64,
    a blank text cell missing (the pipeline imputes it) and any other value that is no finite
    number (infinity included) a ValueError naming every such column and its rows; the columns of
    a one-hot encoder fitted on text as text (``1`` and ``1.0`` are the category ``"1"``), those of
    one fitted on numbers as those numbers (``"2"`` and ``2.0`` are the category ``2``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from gananomaly.explanations import categorical_text, model_input, model_schema, numeric_cells

    if not isinstance(X, pd.DataFrame):
        return X
    numeric: list[str] = []
    text: list[str] = []
    if not isinstance(model, Pipeline):  # a bare table detector: every column is a number
        if getattr(model, "image_shape_", None) is not None:
            return X
        numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    # a model whose first step is a column transformer has a schema: its columns fitted on numbers
    # are handed back as numbers (model_input), as the batch job and score_tabular do
    schema = model_schema(model) if isinstance(model, Pipeline) and isinstance(model.steps[0][1], ColumnTransformer) \
        else None
    for trans, last, cols in column_steps(model) if isinstance(model, Pipeline) else ():
        if isinstance(trans, str):  # "passthrough"
            continue
        if isinstance(last, OneHotEncoder):
            text += [c for c, cats in zip(cols, last.categories_) if c in X.columns
                     and (schema is not None or all(isinstance(v, str) for v in cats if not pd.isna(v)))]
        else:
            numeric += [c for c in cols if c in X.columns]
    converted: dict[str, np.ndarray] = {}
    problems = []
    for col in numeric:
        values, bad = numeric_cells(X[col], col, "X")
        bad = np.flatnonzero(bad)
        if len(bad):
            problems.append(f"column {col!r} holds values that are no finite numbers in rows {(bad[:10] + 1).tolist()} "
                            f"(counted from 1; e.g. {X[col].iloc[bad[0]]!r})")
        elif not pd.api.types.is_numeric_dtype(X[col]):
            converted[col] = values
    if problems:
        raise ValueError("; ".join(problems))
    if not converted and not text:
        return X
    X = X.copy()
    for col, values in converted.items():
        X[col] = values
    for col in text:
        X[col] = categorical_text(X[col])
    return X if schema is None else model_input(X, schema)


def unseen_categories(model, X, given=None) -> tuple[np.ndarray, dict[str, tuple[int, Any]]]:
    """Rows of ``X`` (converted by :func:`convert_columns`) holding a category that a one-hot
    encoder of the model's preprocessing (one that ignores unknown categories) never saw in
    training, and per column the count and an example, as ``given`` (the rows before conversion,
    default ``X``) holds it."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from gananomaly.explanations import category_str

    mask = np.zeros(len(X), dtype=bool)
    counts: dict[str, tuple[int, Any]] = {}
    if not (isinstance(model, Pipeline) and isinstance(X, pd.DataFrame)):
        return mask, counts
    for _, enc, cols in column_steps(model):
        if not isinstance(enc, OneHotEncoder) or enc.handle_unknown == "error":
            continue
        for col, cats in zip(cols, enc.categories_):
            if col not in X.columns:
                continue
            values = X[col]
            # as the encoder compares them: 2, 2.0 and "2" are one category (convert_columns typed them)
            known = {category_str(c) for c in cats if not pd.isna(c)}
            bad = values.notna().to_numpy() & ~values.map(category_str).isin(known).to_numpy()
            if bad.any():
                mask |= bad
                shown = given if isinstance(given, pd.DataFrame) and col in given.columns else X
                example = shown[col].iloc[int(np.flatnonzero(bad)[0])]
                counts[str(col)] = (int(bad.sum()), example.item() if isinstance(example, np.generic) else example)
    return mask, counts


def infer_pyfunc_signature(model, example):
    """The signature of ``predict``: inputs inferred from ``example`` (every training column
    required, numeric columns typed ``Any``; see :func:`_required_inputs`), outputs from the
    scores of ``example``, and for table models the optional integer parameter ``explain``
    (:data:`EXPLAIN_PARAM`, default None), so a model server accepts ``params={"explain": K}``.
    Image models declare outputs only (any array layout and pixel dtype the detector takes)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ParamSchema, ParamSpec

    with warnings.catch_warnings():
        # ``label`` is an integer column by design (+1/-1, never missing).
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = _required_inputs(infer_signature(example, score_frame(model, example)), model)
    if getattr(split_model(model)[1], "image_shape_", None) is not None:
        # No input schema for images: MLflow's tensor check wants the example's exact dtype and
        # rank (float64 or uint8 pixels, (n, 1, H, W) for (n, H, W) were refused with the data
        # printed whole); the detector takes every image layout and names what is wrong.
        return ModelSignature(inputs=None, outputs=signature.outputs)
    return ModelSignature(inputs=signature.inputs, outputs=signature.outputs,
                          params=ParamSchema([ParamSpec(EXPLAIN_PARAM, "long", None)]))


def _required_inputs(signature, model):
    """The inferred signature with every training column required (a NaN in the input
    example must not make a column optional: the model needs all of them), and numeric
    columns typed ``Any``: MLflow refuses int64 data for a ``double`` column and floats for
    a ``long`` one, while the model takes any numbers (and names the column of a bad one)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    context = context_columns(model) or []
    columns = (input_columns(model) or []) + context
    inputs = signature.inputs
    if not columns or inputs is None or not getattr(inputs, "has_input_names", lambda: False)():
        return signature
    numeric = (DataType.long, DataType.integer, DataType.double, DataType.float)
    # a context column's values are compared as categories (1, 1.0 and "1" are one): any type
    specs = [ColSpec(type=AnyType() if c.type in numeric or c.name in context else c.type, name=c.name,
                     required=True)
             if c.name in columns else c for c in inputs.inputs]
    return ModelSignature(inputs=Schema(specs), outputs=signature.outputs, params=signature.params)


def example_frame(model, input_example) -> Any:
    """The input example in the form the pyfunc takes (DataFrame with the training columns)."""
    if input_example is None:
        return None
    if isinstance(input_example, pd.DataFrame):
        return input_example
    arr = np.asarray(input_example)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    columns = input_columns(model)
    if columns is not None:
        return pd.DataFrame(arr, columns=columns)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    return arr
