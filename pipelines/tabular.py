"""Tabular anomaly detection: a table in, one fitted scikit-learn ``Pipeline`` out.

A config (TOML) names the data (a CSV/Parquet file or a built-in table), its column roles
(ID columns kept aside, dropped columns, an optional label used only for evaluation), the
preprocessing and the detector parameters. :func:`fit_tabular` builds

``Pipeline([("preprocess", ColumnTransformer(numeric: impute + scale, categorical: impute +
one-hot)), ("detector", GANAnomalyDetector(...))])``

fits it on the normal rows of a training split, evaluates it on the held-out rows when a
label exists, logs the run to MLflow (through :func:`gananomaly.tracking.tracked_fit`) and
saves it with :func:`gananomaly.persistence.save`, so it loads, logs and scores as one
object. Scoring a large file in chunks lives in :mod:`gananomaly.pipelines.batch_score`.

The config (:mod:`~gananomaly.pipelines.table_config`), reading tables and the input schema
(:mod:`~gananomaly.pipelines.table_data`) sit below this module; their public names are
re-exported here. The command line is :mod:`gananomaly.pipelines.table_cli`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines.batch_files import write_json_atomic
from gananomaly.pipelines.frame_scoring import score_frame, score_prepared
from gananomaly.pipelines.model_loading import load_model
from gananomaly.pipelines.table_config import MISSING_CATEGORY, TabularConfig, load_config
from gananomaly.pipelines.table_data import (
    ModelSchema,
    file_format,
    format_rows,
    infer_columns,
    model_schema,
    prepare_frame,
    read_file,
    read_table,
    schema_of,
)

from gananomaly.explanations import explain_columns

__all__ = [
    "TabularConfig",
    "format_rows",
    "explain_tabular",
    "TabularResult",
    "ModelSchema",
    "load_config",
    "read_table",
    "read_file",
    "file_format",
    "infer_columns",
    "build_pipeline",
    "model_schema",
    "prepare_frame",
    "fit_tabular",
    "score_tabular",
]

log = logging.getLogger(__name__)


def build_pipeline(config: TabularConfig, df: pd.DataFrame):
    """An unfitted ``Pipeline([("preprocess", ColumnTransformer), ("detector", detector)])``
    for the feature columns of ``df`` (see :func:`infer_columns`).

    Numeric columns: ``SimpleImputer`` then the configured scaler. Categorical columns:
    ``SimpleImputer`` then ``OneHotEncoder(handle_unknown="ignore")`` (an unseen category
    encodes as all zeros). Every other column is dropped by the ``ColumnTransformer``.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

    numeric, categorical = infer_columns(config, df)
    transformers = []
    if numeric:
        imputer = (SimpleImputer(strategy="constant", fill_value=0.0) if config.numeric_imputer == "constant"
                   else SimpleImputer(strategy=config.numeric_imputer))
        steps = [("impute", imputer)]
        scaler = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}.get(config.scaler)
        if scaler is not None:
            steps.append(("scale", scaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        imputer = (SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)
                   if config.categorical_imputer == "constant" else SimpleImputer(strategy="most_frequent"))
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, max_categories=config.max_categories,
                                min_frequency=config.min_frequency)
        transformers.append(("categorical", Pipeline([("impute", imputer), ("onehot", encoder)]), categorical))
    pre = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("preprocess", pre), ("detector", config.make_detector())])


def _labels(config: TabularConfig, df: pd.DataFrame) -> np.ndarray:
    col = df[config.label_column]
    if col.isna().any():
        rows = (np.flatnonzero(col.isna().to_numpy()) + 1).tolist()
        raise ValueError(f"data.label_column: column {config.label_column!r} has missing labels in rows "
                         f"{format_rows(rows)}")
    values = config.anomaly_values
    as_text = {str(v) for v in values}
    y = (col.isin(values) | col.astype(str).isin(as_text)).to_numpy().astype(int)
    if not y.any() and col.nunique() > 1:  # a label with several values, none of them listed: a typo
        present = sorted({str(v) for v in col.unique()[:50]})
        raise ValueError(f"data.anomaly_values: none of {values!r} occurs in column {config.label_column!r} "
                         f"(its values: {present[:10]}{' ...' if len(present) > 10 else ''}); every row would "
                         "count as normal")
    return y


# ---------------------------------------------------------------------------------- fit
@dataclass
class TabularResult:
    """What :func:`fit_tabular` returns.

    Attributes
    ----------
    pipeline : sklearn.pipeline.Pipeline
        The fitted preprocessing + detector.
    metrics : DataFrame or None
        AUROC/AUPRC (and F1 for the thresholded component) per score component on the
        held-out rows; None without a label column.
    model_path : pathlib.Path or None
        Where the pipeline was saved (None when no output directory was used).
    run_id : str or None
        The MLflow run (None when not tracked).
    n_train, n_test : int
    numeric_columns, categorical_columns : list of str
    test_scores : DataFrame or None
        Scores of the held-out rows (ID columns, components, ``score``, ``label``, ``y_true``).
    """

    pipeline: Any
    metrics: pd.DataFrame | None
    model_path: Path | None
    run_id: str | None
    n_train: int
    n_test: int
    numeric_columns: list[str]
    categorical_columns: list[str]
    test_scores: pd.DataFrame | None = None

    @property
    def auroc(self) -> float | None:
        """AUROC of the component behind ``predict`` (None without evaluation)."""
        if self.metrics is None:
            return None
        return float(self.metrics.loc[self.pipeline[-1].component, "auroc"])


@contextlib.contextmanager
def _names_test_size(config: TabularConfig, counts: str):
    """scikit-learn's refusal of a split, said in the config's terms."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"split.test_size = {config.test_size} cannot split {counts} (fit_on = "
                         f"{config.fit_on!r}): {exc}") from None


def _split(config: TabularConfig, df: pd.DataFrame):
    """(training rows, held-out rows or None, held-out labels or None, positions in ``df`` of the
    training rows, of the held-out rows or None)."""
    from sklearn.model_selection import train_test_split

    if config.label_column is None:
        return df, None, None, np.arange(len(df)), None
    y = _labels(config, df)
    n_anom = int(y.sum())
    if config.fit_on == "normal":
        normal_idx = np.flatnonzero(y == 0)
        if len(normal_idx) < 4:
            raise ValueError(f"data.label_column: only {len(normal_idx)} normal row(s) (anomaly_values="
                             f"{config.anomaly_values}); need at least 4 to fit and evaluate")
        with _names_test_size(config, f"{len(normal_idx)} normal rows"):
            train_idx, test_normal = train_test_split(normal_idx, test_size=config.test_size,
                                                      random_state=config.random_state)
        test_idx = np.sort(np.r_[test_normal, np.flatnonzero(y == 1)])
        train_idx = np.sort(train_idx)
    else:
        stratify = y if 2 <= n_anom <= len(y) - 2 else None
        with _names_test_size(config, f"{len(df)} rows, {n_anom} anomalies"):
            train_idx, test_idx = train_test_split(np.arange(len(df)), test_size=config.test_size,
                                                   random_state=config.random_state, stratify=stratify)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    y_test = y[test_idx]
    if len(np.unique(y_test)) < 2:
        log.warning("the held-out rows contain only one class; no AUROC can be computed")
        y_test = None
    return df.iloc[train_idx], df.iloc[test_idx], y_test, train_idx, test_idx


def _flavor_available() -> bool:
    try:
        return importlib.util.find_spec("gananomaly.mlflow") is not None
    except (ImportError, ValueError):
        return False


def fit_tabular(config: TabularConfig | str | os.PathLike, data: pd.DataFrame | None = None, *,
                output_dir: str | os.PathLike | None = None, save: bool = True, mlflow: bool | None = None,
                tracking_uri: str | None = None) -> TabularResult:
    """Fit the tabular pipeline described by ``config``.

    Parameters
    ----------
    config : TabularConfig or path to a TOML config
    data : DataFrame, optional
        Use this table instead of the one the config names.
    output_dir : path, optional
        Where to save ``model/`` (the fitted pipeline) and ``metrics.json``; default:
        ``config.output_dir`` or ``runs/<name>``.
    save : bool, default=True
        False: do not write anything locally (the result still holds the pipeline).
    mlflow : bool, optional
        Override ``config.mlflow`` (log the run with :func:`gananomaly.tracking.tracked_fit`).
    tracking_uri : str, optional
        Override ``config.tracking_uri``.

    Returns
    -------
    TabularResult
    """
    if not isinstance(config, TabularConfig):
        config = load_config(config)
    df = read_table(config) if data is None else data
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError("the data has no rows")
    df = df.rename(columns=str)
    if save:
        _check_output(_output_dir(config, output_dir))  # before hours of training, not after
    pipeline = build_pipeline(config, df)
    schema = schema_of(config, df)
    train_df, test_df, y_test, train_pos, test_pos = _split(config, df)
    # Rows are named by their number in the data (from 1), whichever part of the split holds them.
    X_train, _, _ = prepare_frame(train_df, schema, row_numbers=train_pos + 1, where="the data",
                                  hint="Fix or remove those rows")
    X_test = None
    if test_df is not None:
        X_test, _, _ = prepare_frame(test_df, schema, row_numbers=test_pos + 1, where="the data",
                                     hint="Fix or remove those rows")
    ctx_train, ctx_test = _contexts(config, train_df, train_pos, test_df, test_pos)
    use_mlflow = config.mlflow if mlflow is None else mlflow
    run_id = None
    with _columns_named_in_warnings(pipeline, schema, X_train):
        if use_mlflow:
            pipeline, run_id = _tracked_fit(config, pipeline, schema, X_train, X_test, y_test, tracking_uri,
                                            ctx_train, ctx_test)
        else:
            pipeline.fit(X_train, **({} if ctx_train is None else {"detector__context": ctx_train}))
    metrics, test_scores = _evaluate(config, pipeline, test_df, X_test, y_test, ctx_test)
    result = TabularResult(pipeline=pipeline, metrics=metrics, model_path=None, run_id=run_id,
                           n_train=len(X_train), n_test=0 if X_test is None else len(X_test),
                           numeric_columns=schema.numeric, categorical_columns=schema.categorical,
                           test_scores=test_scores)
    if save:
        result.model_path = _save(config, result, output_dir)
    return result


# The detector's warnings about its input columns (data.fit_scaler) name positions when it is fed
# the preprocessing's array; the pipeline says them again by input column.
_COLUMN_WARNINGS = ("columns constant in the training data", "columns whose scale is set by a few extreme values")


@contextlib.contextmanager
def _columns_named_in_warnings(pipeline, schema: ModelSchema, X_train: pd.DataFrame):
    """Run a pipeline fit; the detector's warnings about constant or extreme features, which
    can only give the preprocessed array's positions, are issued again naming the input column
    (``amount``; ``channel=web`` for a one-hot feature). They are held at the point of display
    (``warnings.showwarning``), so every other warning passes through the caller's filters
    untouched; a fit that fails shows the held ones as they were."""
    import warnings

    from gananomaly import data as _data
    from gananomaly.explanations import feature_columns, model_schema

    held: list[tuple] = []
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and str(message).startswith(_COLUMN_WARNINGS):
            held.append((message, category, filename, lineno, file, line))
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    except BaseException:
        warnings.showwarning = previous
        for args in held:
            previous(*args)
        raise
    finally:
        warnings.showwarning = previous
    if not held:
        return
    pre = pipeline[:-1]
    names = [str(n) for n in pre.get_feature_names_out()]
    labels = []
    for name, column in zip(names, feature_columns(names, model_schema(pipeline))):
        tail = name.split("__", 1)[-1]
        labels.append(column if tail == column or column not in schema.categorical
                      else f"{column}={tail[len(column) + 1:]}")
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message="|".join(_COLUMN_WARNINGS))
        _data.fit_scaler(np.asarray(pre.transform(X_train), dtype=np.float64), labels)


def _contexts(config: TabularConfig, train_df: pd.DataFrame, train_pos: np.ndarray, test_df: pd.DataFrame | None,
              test_pos: np.ndarray | None) -> tuple[pd.Series | None, pd.Series | None]:
    """Each training and held-out row's context (``data.context_column``, named so the saved
    model reads it from a scored table's column of that name), or (None, None). A missing
    context, or a held-out row whose context no training row has, is an error naming the rows
    (counted from 1 in the data)."""
    col = config.context_column
    if col is None:
        return None, None
    parts = []
    for frame, pos in ((train_df, train_pos), (test_df, test_pos)):
        if frame is None:
            parts.append(None)
            continue
        values = frame[col]
        missing = values.isna().to_numpy()
        if missing.any():
            raise ValueError(f"data.context_column: column {col!r} is missing in rows "
                             f"{format_rows((pos[missing] + 1).tolist())}: every row needs its context (fill it or "
                             "remove those rows)")
        parts.append(pd.Series(values.to_numpy(), name=col))
    ctx_train, ctx_test = parts
    if ctx_test is not None:
        from gananomaly import context as _context

        _, known, _, _ = _context.fit(ctx_train, np.empty((len(ctx_train), 0)))  # the categories the model will have
        unseen = _context.unseen_rows(ctx_test, known)
        if len(unseen):
            raise ValueError(f"data.context_column: held-out rows {format_rows((test_pos[unseen] + 1).tolist())} have "
                             f"contexts no training row has (e.g. {ctx_test.iloc[unseen[0]]!r}; training has "
                             f"{known[:10]}): the model cannot judge them; give the training rows those contexts too")
    return ctx_train, ctx_test


def _tracked_fit(config: TabularConfig, pipeline, schema: ModelSchema, X_train: pd.DataFrame,
                 X_test: pd.DataFrame | None, y_test: np.ndarray | None, tracking_uri: str | None,
                 ctx_train: pd.Series | None = None, ctx_test: pd.Series | None = None):
    """Fit through :func:`gananomaly.tracking.tracked_fit`: (fitted pipeline, run id)."""
    from gananomaly.tracking import tracked_fit

    log_model = _flavor_available()
    if not log_model:
        log.warning("gananomaly.mlflow is not installed: the run is logged without the model")
    extra = {"config_name": config.name, "data": config.builtin or str(config.path),
             "numeric_columns": ",".join(schema.numeric), "categorical_columns": ",".join(schema.categorical),
             "fit_on": config.fit_on, "n_train": len(X_train)}
    if config.context_column is not None:
        extra["context_column"] = config.context_column
    return tracked_fit(
        pipeline, X_train, X_eval=X_test if y_test is not None else None, y_eval=y_test,
        experiment=config.experiment, run_name=config.run_name or config.name,
        tracking_uri=tracking_uri or config.tracking_uri, log_model=log_model, extra_params=extra,
        tags={"gananomaly.pipeline": "tabular"}, context=ctx_train,
        context_eval=ctx_test if y_test is not None else None,
    )


def _evaluate(config: TabularConfig, pipeline, test_df: pd.DataFrame | None, X_test: pd.DataFrame | None,
              y_test: np.ndarray | None, ctx_test: pd.Series | None = None
              ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(metrics, scores) of the held-out rows; (None, None) without held-out rows."""
    if X_test is None:
        return None, None
    metrics = None
    scored = score_prepared(pipeline, X_test, ctx_test)  # one pass: the table and the metrics read it
    test_scores = scored.copy()
    for col in reversed(config.id_columns):
        test_scores.insert(0, col, test_df[col].to_numpy())
    if y_test is not None:
        from gananomaly.metrics import evaluate_detector

        test_scores["y_true"] = y_test
        metrics = evaluate_detector(pipeline[-1], None, y_test, table=scored)
    return metrics, test_scores


def _output_dir(config: TabularConfig, output_dir: str | os.PathLike | None) -> Path:
    return Path(output_dir or config.output_dir or Path("runs") / config.name)


def _check_output(out: Path) -> None:
    """Raise what saving ``<out>/model`` and ``<out>/metrics.json`` would raise about the places
    themselves (a file where the folder goes, a model folder that cannot be replaced, a folder
    where metrics.json goes); nothing is written."""
    from gananomaly.model_dir import check_target

    where = f"the output folder {str(out)!r} (--output, output.dir)"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where} is a file, not a folder")
    # the folders that do not exist yet are created: the nearest one that does must be a
    # writable folder (a file there failed at the save, after the training)
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{where} cannot be created: {str(existing)!r} is a file, not a folder")
    if not out.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{where} cannot be created: {str(existing)!r} is not writable")
    if (out / "model").exists():
        check_target(out / "model", probe=False)
    if (out / "metrics.json").is_dir():
        raise ValueError(f"{where} holds a folder named metrics.json, where the summary is written")


def _save(config: TabularConfig, result: TabularResult, output_dir: str | os.PathLike | None) -> Path:
    """Save the fitted pipeline to ``<out>/model`` and the summary to ``<out>/metrics.json``."""
    from gananomaly.persistence import save as save_model

    out = _output_dir(config, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = save_model(result.pipeline, out / "model")
    metrics = result.metrics
    summary = {"name": config.name, "run_id": result.run_id, "n_train": result.n_train, "n_test": result.n_test,
               "numeric_columns": result.numeric_columns, "categorical_columns": result.categorical_columns,
               "metrics": None if metrics is None else {
                   comp: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                   for comp, row in metrics.iterrows()}}
    write_json_atomic(out / "metrics.json", summary, indent=2)
    return model_path


def explain_tabular(model, data: pd.DataFrame, *, top: int | None = None) -> pd.DataFrame:
    """Why each row of a table scores as it does, per *original* column.

    The detector's per-feature contributions (:meth:`GANAnomalyDetector.explain`) are summed
    over the features a column became (a categorical column's one-hot group), so every input
    column appears once per row (:func:`gananomaly.explanations.explain_columns`).

    Returns
    -------
    Long DataFrame: ``row`` (position in ``data``), ``index`` (its label in ``data.index``, as
    :func:`score_tabular` keeps it: join on it), ``rank``, ``column``, ``contribution``,
    ``value``, ``expected`` and ``imputed``, as :func:`~gananomaly.explanations.explain_columns`
    describes them. A model fitted with a context column reads each row's context from it.
    """
    from sklearn.pipeline import Pipeline

    if not (isinstance(model, Pipeline) and len(model.steps) > 1):
        raise TypeError("explain_tabular takes a fitted tabular pipeline (preprocessing + detector); for a bare "
                        "detector use its explain() method")
    schema = model_schema(model)
    context = None
    if schema.context:  # each row's context, from its column (a missing or unseen one is named)
        from gananomaly.context import read_table

        context = read_table(data, schema.context, schema.context_categories)
    out = explain_columns(model, data, top=top, context=context)
    out.insert(1, "index", data.index[out["row"].to_numpy()] if len(out) else pd.Index([], dtype=data.index.dtype))
    return out


def score_tabular(model, data: pd.DataFrame | str | os.PathLike, *, id_column: str | None = None,
                  extra_columns: str = "drop", on_bad_rows: str = "error", unseen: str = "score") -> pd.DataFrame:
    """Score a whole table in memory (for files larger than memory use
    :func:`gananomaly.pipelines.batch_score.score_file`).

    Parameters
    ----------
    model : fitted Pipeline/detector, or a model directory or MLflow model URI
    data : DataFrame or path to a CSV/Parquet file
    id_column : str, optional
        Column copied to the output first.
    extra_columns, on_bad_rows, unseen : str
        Bad-input policies, as in :func:`gananomaly.pipelines.batch_score.score_file`.

    Returns
    -------
    DataFrame with ``id_column`` (if given), ``discriminator``, ``reconstruction``,
    ``latent``, ``combined`` (higher = more anomalous), ``score`` (``score_samples``: higher = more
    normal) and ``label`` (+1 inlier, -1 outlier).
    """
    if not hasattr(model, "score_samples"):
        model, _ = load_model(model)
    if not isinstance(data, pd.DataFrame):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no such input file {str(path)!r}")
        # as the batch job reads it: categories and IDs as text ("001" stays "001", an ID "NA" an ID)
        data = read_file(path, text_columns=model_schema(model).text_columns,
                         id_columns=[id_column] if id_column else [])
    scores, _report = score_frame(model, data, id_column=id_column, extra_columns=extra_columns,
                                  on_bad_rows=on_bad_rows, unseen=unseen)
    return scores
