"""Tabular anomaly detection: a table in, one fitted scikit-learn ``Pipeline`` out.

A config (TOML) names the data (a CSV/Parquet file or a built-in table), its column roles
(ID columns kept aside, dropped columns, an optional label used only for evaluation), the
preprocessing and the detector parameters. :func:`fit_tabular` builds

``Pipeline([("preprocess", ColumnTransformer(numeric: impute + scale, categorical: impute +
one-hot)), ("detector", GANAnomalyDetector(...))])``

fits it on the normal rows of a training split, evaluates it on the held-out rows when a
label exists, logs the run to MLflow (through :func:`gananomaly.tracking.tracked_fit`) and
saves it with :func:`gananomaly.persistence.save`, so it loads, logs and scores as one
object. Scoring a table (or a large file, in chunks) lives in :mod:`gananomaly.pipelines.batch_score`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gananomaly._atomic import atomic_open

__all__ = [
    "TabularConfig",
    "format_rows",
    "explain_tabular",
    "TabularResult",
    "ModelSchema",
    "load_config",
    "read_table",
    "read_file",
    "infer_columns",
    "build_pipeline",
    "model_schema",
    "prepare_frame",
    "fit_tabular",
    "score_tabular",
    "register_cli",
]

log = logging.getLogger(__name__)

_NUMERIC_IMPUTERS = ("median", "mean", "constant")
_SCALERS = ("standard", "robust", "minmax", "none")
_CATEGORICAL_IMPUTERS = ("most_frequent", "constant")
_FIT_ON = ("normal", "all")
MISSING_CATEGORY = "__missing__"

_KEYS: dict[str, set[str]] = {
    "": {"name", "data", "preprocessing", "split", "detector", "mlflow", "output"},
    "data": {"path", "format", "builtin", "options", "id_columns", "drop_columns", "label_column",
             "anomaly_values", "numeric_columns", "categorical_columns"},
    "preprocessing": {"numeric_imputer", "scaler", "categorical_imputer", "max_categories", "min_frequency"},
    "split": {"fit_on", "test_size", "random_state"},
    "mlflow": {"enabled", "experiment", "tracking_uri", "run_name"},
    "output": {"dir"},
}


# ---------------------------------------------------------------------------------- config
@dataclass
class TabularConfig:
    """Everything a tabular run needs; build it with :func:`load_config` or
    :meth:`from_dict` (which validate every key) or directly.

    Parameters
    ----------
    name : str
        Run name (also the default output directory ``runs/<name>``).
    path : str or None
        CSV or Parquet file (relative paths are resolved against ``base_dir``).
    builtin : str or None
        A built-in table instead of a file: ``"breast_cancer"``, ``"wine"``, ``"mixed"``.
    options : dict
        Keyword arguments of the built-in loader (see :mod:`gananomaly.pipelines.datasets`).
    format : {"csv", "parquet"} or None
        File format (None: from the file suffix).
    id_columns : list of str
        Carried through to score outputs, never used as features.
    drop_columns : list of str
        Ignored entirely.
    label_column : str or None
        Used only to split and evaluate, never as a feature.
    anomaly_values : list
        Values of ``label_column`` that mark an anomaly (every other value is normal).
    numeric_columns, categorical_columns : list of str or None
        Column roles; None: inferred from the dtypes (numbers are numeric, the rest categorical).
    numeric_imputer : {"median", "mean", "constant"}
        ``"constant"`` fills 0.
    scaler : {"standard", "robust", "minmax", "none"}
    categorical_imputer : {"most_frequent", "constant"}
        ``"constant"`` fills the category ``"__missing__"``.
    max_categories, min_frequency : int or None
        Passed to :class:`~sklearn.preprocessing.OneHotEncoder` (rare categories grouped).
    fit_on : {"normal", "all"}
        With a label: fit on normal training rows only (default) or on all training rows.
    test_size : float in (0, 1)
        Fraction held out for evaluation (normal rows; every anomaly is held out when
        ``fit_on="normal"``). Ignored without a label: then every row is used for fitting.
    random_state : int
        Seed of the split.
    detector : dict
        Parameters of :class:`gananomaly.GANAnomalyDetector`.
    mlflow : bool
        Log the run (parameters, losses, metrics, plots, the model) to MLflow.
    experiment, tracking_uri, run_name : str or None
        MLflow settings (tracking URI default: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
    output_dir : str or None
        Where the model and metrics go (default ``runs/<name>``, relative to the working directory).
    base_dir : pathlib.Path
        Directory that relative data paths are resolved against (the config file's directory).
    """

    name: str = "tabular"
    path: str | None = None
    builtin: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    id_columns: list[str] = field(default_factory=list)
    drop_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    anomaly_values: list[Any] = field(default_factory=lambda: [1])
    numeric_columns: list[str] | None = None
    categorical_columns: list[str] | None = None
    numeric_imputer: str = "median"
    scaler: str = "standard"
    categorical_imputer: str = "most_frequent"
    max_categories: int | None = None
    min_frequency: int | float | None = None
    fit_on: str = "normal"
    test_size: float = 0.3
    random_state: int = 0
    detector: dict[str, Any] = field(default_factory=dict)
    mlflow: bool = True
    experiment: str = "gananomaly-tabular"
    tracking_uri: str | None = None
    run_name: str | None = None
    output_dir: str | None = None
    base_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------
    def validate(self) -> TabularConfig:
        """Check every field; raise ValueError naming the config key."""
        _check_str("name", self.name)
        if (self.path is None) == (self.builtin is None):
            raise ValueError("data: give exactly one of data.path (a CSV/Parquet file) and data.builtin "
                             f"(got path={self.path!r}, builtin={self.builtin!r})")
        if self.path is not None:
            _check_str("data.path", self.path)
        if self.builtin is not None:
            from gananomaly.pipelines.datasets import BUILTIN_DATASETS

            if self.builtin not in BUILTIN_DATASETS:
                raise ValueError(f"data.builtin: unknown data set {self.builtin!r}; "
                                 f"choose from {sorted(BUILTIN_DATASETS)}")
        if not isinstance(self.options, dict):
            raise ValueError(f"data.options must be a table, got {self.options!r}")
        if self.format is not None and self.format not in ("csv", "parquet"):
            raise ValueError(f"data.format must be 'csv' or 'parquet', got {self.format!r}")
        for key in ("id_columns", "drop_columns"):
            _check_str_list(f"data.{key}", getattr(self, key))
        for key in ("numeric_columns", "categorical_columns"):
            if getattr(self, key) is not None:
                _check_str_list(f"data.{key}", getattr(self, key))
        if self.label_column is not None:
            _check_str("data.label_column", self.label_column)
        if not isinstance(self.anomaly_values, list) or not self.anomaly_values:
            raise ValueError(f"data.anomaly_values must be a non-empty list, got {self.anomaly_values!r}")
        roles = {"id_columns": self.id_columns, "drop_columns": self.drop_columns,
                 "label_column": [self.label_column] if self.label_column else [],
                 "numeric_columns": self.numeric_columns or [], "categorical_columns": self.categorical_columns or []}
        seen: dict[str, str] = {}
        for role, cols in roles.items():
            for col in cols:
                if col in seen and seen[col] != role:
                    raise ValueError(f"data.{role}: column {col!r} is also listed in data.{seen[col]}")
                seen[col] = role
        _check_choice("preprocessing.numeric_imputer", self.numeric_imputer, _NUMERIC_IMPUTERS)
        _check_choice("preprocessing.scaler", self.scaler, _SCALERS)
        _check_choice("preprocessing.categorical_imputer", self.categorical_imputer, _CATEGORICAL_IMPUTERS)
        if self.max_categories is not None and (not _is_int(self.max_categories) or self.max_categories < 2):
            raise ValueError(f"preprocessing.max_categories must be an int >= 2, got {self.max_categories!r}")
        if self.min_frequency is not None and not (
                (_is_int(self.min_frequency) and self.min_frequency >= 1)
                or (isinstance(self.min_frequency, float) and 0 < self.min_frequency < 1)):
            raise ValueError("preprocessing.min_frequency must be an int >= 1 or a float in (0, 1), "
                             f"got {self.min_frequency!r}")
        _check_choice("split.fit_on", self.fit_on, _FIT_ON)
        if isinstance(self.test_size, bool) or not isinstance(self.test_size, (int, float)) \
                or not 0 < self.test_size < 1:
            raise ValueError(f"split.test_size must be a number in (0, 1), got {self.test_size!r}")
        if not _is_int(self.random_state):
            raise ValueError(f"split.random_state must be an int, got {self.random_state!r}")
        if not isinstance(self.detector, dict):
            raise ValueError(f"detector must be a table of GANAnomalyDetector parameters, got {self.detector!r}")
        self.make_detector()  # validates the detector parameters
        if not isinstance(self.mlflow, bool):
            raise ValueError(f"mlflow.enabled must be true or false, got {self.mlflow!r}")
        _check_str("mlflow.experiment", self.experiment)
        for key in ("tracking_uri", "run_name", "output_dir"):
            if getattr(self, key) is not None:
                _check_str(_KEY_NAMES.get(key, key), getattr(self, key))
        self.base_dir = Path(self.base_dir)
        return self

    def make_detector(self):
        """A fresh :class:`gananomaly.GANAnomalyDetector` with the ``detector`` parameters
        (validated: unknown names and bad values raise ValueError naming ``detector.<key>``)."""
        from gananomaly import GANAnomalyDetector

        params = dict(self.detector)
        valid = set(GANAnomalyDetector().get_params(deep=False)) - {"callbacks"}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"detector: unknown parameter(s) {unknown}; valid: {sorted(valid)}")
        if isinstance(params.get("hidden_dims"), list):
            params["hidden_dims"] = tuple(params["hidden_dims"])
        det = GANAnomalyDetector(**params)
        try:
            det._validate_params()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"detector: {exc}") from exc
        return det

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base_dir: str | os.PathLike | None = None) -> TabularConfig:
        """Build from the nested dict of a config file (sections ``data``, ``preprocessing``,
        ``split``, ``detector``, ``mlflow``, ``output``); unknown keys raise ValueError."""
        if not isinstance(raw, dict):
            raise ValueError(f"a tabular config must be a table, got {type(raw).__name__}")
        _check_keys("", raw)
        sections = {}
        for sec in ("data", "preprocessing", "split", "mlflow", "output"):
            value = raw.get(sec, {})
            if not isinstance(value, dict):
                raise ValueError(f"[{sec}] must be a table, got {value!r}")
            _check_keys(sec, value)
            sections[sec] = value
        if "data" not in raw:
            raise ValueError("[data] section missing: give data.path or data.builtin")
        data, prep, split, mlf = sections["data"], sections["preprocessing"], sections["split"], sections["mlflow"]
        kwargs: dict[str, Any] = {k: v for k, v in data.items()}
        kwargs.update(prep)
        kwargs.update(split)
        if "enabled" in mlf:
            kwargs["mlflow"] = mlf["enabled"]
        for key in ("experiment", "tracking_uri", "run_name"):
            if key in mlf:
                kwargs[key] = mlf[key]
        if "dir" in sections["output"]:
            kwargs["output_dir"] = sections["output"]["dir"]
        if "name" in raw:
            kwargs["name"] = raw["name"]
        if "detector" in raw:
            kwargs["detector"] = raw["detector"]
        kwargs["base_dir"] = Path(base_dir) if base_dir is not None else Path.cwd()
        return cls(**kwargs)

    # -- derived -----------------------------------------------------------------------
    @property
    def data_path(self) -> Path | None:
        """The data file, resolved against ``base_dir``."""
        if self.path is None:
            return None
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def id_column(self) -> str | None:
        """The first ID column (the one batch scoring keeps), or None."""
        return self.id_columns[0] if self.id_columns else None


_KEY_NAMES = {"tracking_uri": "mlflow.tracking_uri", "run_name": "mlflow.run_name", "output_dir": "output.dir"}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_str(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")


def _check_str_list(key: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of column names, got {value!r}")
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"{key} lists column(s) more than once: {dupes}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")


def _check_keys(section: str, table: dict[str, Any]) -> None:
    unknown = sorted(set(table) - _KEYS[section])
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise ValueError(f"unknown key(s) {unknown} in {where} of the config; valid: {sorted(_KEYS[section])}")


def load_config(path: str | os.PathLike) -> TabularConfig:
    """Read and validate a TOML config file.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not valid TOML, or a key is unknown or has a bad value (the message names the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config {str(path)!r} is not valid TOML: {exc}") from exc
    try:
        return TabularConfig.from_dict(raw, base_dir=path.resolve().parent)
    except ValueError as exc:
        raise ValueError(f"config {str(path)!r}: {exc}") from exc


# ---------------------------------------------------------------------------------- data
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
                     "(or give the format explicitly)")


def read_table(config: TabularConfig) -> pd.DataFrame:
    """The whole table named by ``config`` (a file or a built-in data set)."""
    if config.builtin is not None:
        from gananomaly.pipelines.datasets import load_builtin

        return load_builtin(config.builtin, **config.options)
    path = config.data_path
    if not path.is_file():
        raise FileNotFoundError(f"data.path: no such file {str(path)!r}")
    try:
        return read_file(path, config.format)
    except ValueError as exc:
        raise ValueError(f"data.path: {exc}") from exc


def read_file(path: str | os.PathLike, fmt: str | None = None) -> pd.DataFrame:
    """Read a whole CSV or Parquet file (format from the suffix unless ``fmt`` is given).

    Raises
    ------
    ValueError
        Empty file, no rows, or a file that cannot be parsed.
    """
    path = Path(path)
    fmt = file_format(path, fmt)
    try:
        if fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{str(path)!r} is empty") from exc
    except (pd.errors.ParserError, OSError) as exc:
        raise ValueError(f"cannot read {str(path)!r} as {fmt}: {exc}") from exc
    if len(df) == 0:
        raise ValueError(f"{str(path)!r} has a header but no rows")
    return df


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
    if config.label_column is not None and config.label_column not in columns:
        raise ValueError(f"data.label_column: column {config.label_column!r} not in the data (columns: {columns})")
    reserved = set(config.id_columns) | set(config.drop_columns) | {config.label_column}
    free = [c for c in columns if c not in reserved]
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
    if not numeric and not categorical:
        raise ValueError(f"no feature columns left: every column is an ID, dropped or the label (columns: {columns})")
    return numeric, categorical


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
    """

    numeric: list[str]
    categorical: list[str]
    categories: dict[str, set] = field(default_factory=dict)
    named: bool = True

    @property
    def columns(self) -> list[str]:
        return list(self.numeric) + list(self.categorical)


def model_schema(model) -> ModelSchema:
    """The input columns of a fitted detector or ``Pipeline`` ending in one.

    For a pipeline that starts with a ``ColumnTransformer`` the columns of every transformer
    are required; those of a transformer containing a ``OneHotEncoder`` are categorical, the
    rest numeric. Otherwise every column the model was fitted on is numeric.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    if isinstance(first, ColumnTransformer) and hasattr(first, "transformers_"):
        numeric: list[str] = []
        categorical: list[str] = []
        categories: dict[str, set] = {}
        for _name, trans, cols in first.transformers_:
            if _name == "remainder" or trans == "drop" or len(cols) == 0:
                continue
            if not all(isinstance(c, str) for c in cols):
                names = getattr(first, "feature_names_in_", None)
                if names is None:
                    raise ValueError("the model's ColumnTransformer selects columns by position; it needs named "
                                     "columns to score tables")
                cols = [str(names[c]) for c in cols]
            steps = trans.steps if isinstance(trans, Pipeline) else [("", trans)]
            encoders = [s for _, s in steps if isinstance(s, OneHotEncoder)]
            if encoders:
                categorical.extend(cols)
                for col, cats in zip(cols, encoders[0].categories_):
                    categories[col] = {str(c) for c in cats}
            else:
                numeric.extend(cols)
        if first.remainder != "drop":
            raise ValueError("the model's ColumnTransformer passes the remaining columns through; batch scoring "
                             "needs remainder='drop' to know the required columns")
        return ModelSchema(numeric, categorical, categories)
    names = getattr(first, "feature_names_in_", None)
    if names is not None:
        return ModelSchema([str(n) for n in names], [])
    return ModelSchema([str(i) for i in range(int(first.n_features_in_))], [], named=False)


def format_rows(rows: list[int], limit: int = 10) -> str:
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def prepare_frame(df: pd.DataFrame, schema: ModelSchema, *, row_numbers: np.ndarray | None = None,
                  on_bad_rows: str = "error", where: str = "input") -> tuple[pd.DataFrame, np.ndarray, dict]:
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
        if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
            raise ValueError(f"{where}: column {col!r} has type {s.dtype}, but the model expects numbers")
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            values = s.astype(np.float64).to_numpy(copy=True)
            col_bad = np.isinf(values)
        else:
            text = s.astype(object)
            blank = text.isna().to_numpy() | text.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(bool)
            values = pd.to_numeric(text.where(~blank, None), errors="coerce").astype(np.float64).to_numpy(copy=True)
            col_bad = (np.isnan(values) & ~blank) | np.isinf(values)
        if col_bad.any():
            bad[col] = row_numbers[col_bad].tolist()
            examples[col] = s[col_bad].head(3).tolist()
            bad_mask |= col_bad
        out[col] = values
    for col in schema.categorical:
        s = df[col]
        obj = s.astype(object)
        na = obj.isna().to_numpy()
        if pd.api.types.is_string_dtype(s) and all(isinstance(v, str) for v in obj[~na]):
            out[col] = np.where(na, None, obj.to_numpy()).astype(object)
        else:
            out[col] = np.where(na, None, obj.map(_category_str)).astype(object)
    if bad:
        if on_bad_rows == "error":
            details = "; ".join(f"column {c!r}: rows {format_rows(r)} (e.g. {examples[c]!r})" for c, r in bad.items())
            raise ValueError(f"{where}: values that are not finite numbers in numeric column(s): {details}. "
                             "Fix them or skip those rows (on_bad_rows='skip', --on-bad-rows skip)")
        log.warning("%s: skipping %d row(s) with unparseable numbers: %s", where, int(bad_mask.sum()),
                    "; ".join(f"{c!r} rows {format_rows(r)}" for c, r in bad.items()))
    frame = pd.DataFrame(out, index=df.index, columns=schema.columns)
    keep = ~bad_mask
    if bad_mask.any():
        frame = frame.loc[keep]
    return frame, keep, bad


def _category_str(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # 3.0 read from a column with gaps is the category "3"
    return str(v)


def _labels(config: TabularConfig, df: pd.DataFrame) -> np.ndarray:
    col = df[config.label_column]
    if col.isna().any():
        rows = (np.flatnonzero(col.isna().to_numpy()) + 1).tolist()
        raise ValueError(f"data.label_column: column {config.label_column!r} has missing labels in rows "
                         f"{format_rows(rows)}")
    values = config.anomaly_values
    as_text = {str(v) for v in values}
    y = (col.isin(values) | col.astype(str).isin(as_text)).to_numpy().astype(int)
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


def _split(config: TabularConfig, df: pd.DataFrame):
    from sklearn.model_selection import train_test_split

    if config.label_column is None:
        return df, None, None
    y = _labels(config, df)
    n_anom = int(y.sum())
    if config.fit_on == "normal":
        normal_idx = np.flatnonzero(y == 0)
        if len(normal_idx) < 4:
            raise ValueError(f"data.label_column: only {len(normal_idx)} normal row(s) (anomaly_values="
                             f"{config.anomaly_values}); need at least 4 to fit and evaluate")
        train_idx, test_normal = train_test_split(normal_idx, test_size=config.test_size,
                                                  random_state=config.random_state)
        test_idx = np.sort(np.r_[test_normal, np.flatnonzero(y == 1)])
        train_idx = np.sort(train_idx)
    else:
        stratify = y if 2 <= n_anom <= len(y) - 2 else None
        train_idx, test_idx = train_test_split(np.arange(len(df)), test_size=config.test_size,
                                               random_state=config.random_state, stratify=stratify)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    y_test = y[test_idx]
    if len(np.unique(y_test)) < 2:
        log.warning("the held-out rows contain only one class; no AUROC can be computed")
        return df.iloc[train_idx], df.iloc[test_idx], None
    return df.iloc[train_idx], df.iloc[test_idx], y_test


def _flavor_available() -> bool:
    try:
        return importlib.util.find_spec("gananomaly.mlflow") is not None
    except (ImportError, ValueError):
        return False


def _write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, default=str)


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
    pipeline = build_pipeline(config, df)
    schema = ModelSchema(*infer_columns(config, df))
    numeric, categorical = schema.numeric, schema.categorical
    train_df, test_df, y_test = _split(config, df)
    X_train, _, _ = prepare_frame(train_df, schema, where="training data")
    X_test = None
    if test_df is not None:
        X_test, _, _ = prepare_frame(test_df, schema, where="held-out data")

    use_mlflow = config.mlflow if mlflow is None else mlflow
    run_id = None
    if use_mlflow:
        from gananomaly.tracking import tracked_fit

        log_model = _flavor_available()
        if not log_model:
            log.warning("gananomaly.mlflow is not installed: the run is logged without the model")
        extra = {"config_name": config.name, "data": config.builtin or str(config.path),
                 "numeric_columns": ",".join(numeric), "categorical_columns": ",".join(categorical),
                 "fit_on": config.fit_on, "n_train": len(X_train)}
        pipeline, run_id = tracked_fit(
            pipeline, X_train, X_eval=X_test if y_test is not None else None, y_eval=y_test,
            experiment=config.experiment, run_name=config.run_name or config.name,
            tracking_uri=tracking_uri or config.tracking_uri, log_model=log_model, extra_params=extra,
            tags={"gananomaly.pipeline": "tabular"},
        )
    else:
        pipeline.fit(X_train)

    metrics = None
    test_scores = None
    if X_test is not None:
        from gananomaly.pipelines.batch_score import score_prepared

        test_scores = score_prepared(pipeline, X_test)
        for col in reversed(config.id_columns):
            test_scores.insert(0, col, test_df[col].to_numpy())
        if y_test is not None:
            from gananomaly.metrics import evaluate_detector

            test_scores["y_true"] = y_test
            metrics = evaluate_detector(pipeline[-1], pipeline[:-1].transform(X_test), y_test)

    model_path = None
    if save:
        from gananomaly.persistence import save as save_model

        out = Path(output_dir or config.output_dir or Path("runs") / config.name)
        out.mkdir(parents=True, exist_ok=True)
        model_path = save_model(pipeline, out / "model")
        summary = {"name": config.name, "run_id": run_id, "n_train": len(X_train),
                   "n_test": 0 if X_test is None else len(X_test),
                   "numeric_columns": numeric, "categorical_columns": categorical,
                   "metrics": None if metrics is None else {
                       comp: {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
                       for comp, row in metrics.iterrows()}}
        _write_json_atomic(out / "metrics.json", summary)
    return TabularResult(pipeline=pipeline, metrics=metrics, model_path=model_path, run_id=run_id,
                         n_train=len(X_train), n_test=0 if X_test is None else len(X_test),
                         numeric_columns=numeric, categorical_columns=categorical, test_scores=test_scores)


def explain_tabular(model, data: pd.DataFrame, *, top: int | None = None) -> pd.DataFrame:
    """Why each row of a table scores as it does, per *original* column.

    The detector's per-feature contributions (:meth:`GANAnomalyDetector.explain`) are summed
    over the features a column became (a categorical column's one-hot group), so every input
    column appears once per row.

    Returns
    -------
    Long DataFrame: ``row`` (position in ``data``), ``rank`` (1 = largest contribution),
    ``column``, ``contribution``, ``value`` (as given), ``expected`` (what the model expected:
    a number in the column's units, or the category whose one-hot feature it expected most)
    and ``imputed`` (the value was missing and the pipeline filled it in).
    """
    from sklearn.pipeline import Pipeline

    if not (isinstance(model, Pipeline) and len(model.steps) > 1):
        raise TypeError("explain_tabular takes a fitted tabular pipeline (preprocessing + detector); for a bare "
                        "detector use its explain() method")
    schema = model_schema(model)
    frame, keep, _ = prepare_frame(data, schema)
    pre, det = model[:-1], model.steps[-1][1]
    Xt = pre.transform(frame)
    names = [str(n) for n in pre.get_feature_names_out()]
    source = _feature_columns(names, schema)
    long = det.explain(Xt)
    long["column"] = [source[_feature_index(f, names)] for f in long["feature"]]
    grouped = long.groupby(["row", "column"], sort=False)["contribution"].sum().reset_index()
    # what the detector expected for every preprocessed feature, from the same pass
    expected_t = np.empty((len(frame), len(names)))
    expected_t[long["row"].to_numpy(), [_feature_index(f, names) for f in long["feature"]]] = long["expected"]
    expected = _expected_values(pre, names, source, schema, expected_t)
    rows = np.flatnonzero(keep)  # positions in data of the rows prepare_frame kept
    original = data.iloc[rows].reset_index(drop=True)
    grouped["value"] = [original.at[r, c] for r, c in zip(grouped["row"], grouped["column"])]
    grouped["imputed"] = [bool(pd.isna(v)) for v in grouped["value"]]
    grouped["expected"] = [expected[c][r] for r, c in zip(grouped["row"], grouped["column"])]
    grouped = grouped.sort_values(["row", "contribution"], ascending=[True, False], kind="stable")
    grouped["rank"] = grouped.groupby("row").cumcount() + 1
    if top is not None:
        grouped = grouped[grouped["rank"] <= int(top)]
    grouped["row"] = rows[grouped["row"].to_numpy()]
    return grouped[["row", "rank", "column", "contribution", "value", "expected", "imputed"]].reset_index(drop=True)


def _feature_index(feature, names: list[str]) -> int:
    """Position of a detector feature: its name among ``names``, or ``x<j>`` when the
    detector was fitted on an unnamed array."""
    f = str(feature)
    return int(f[1:]) if f.startswith("x") and f[1:].isdigit() else names.index(f)


def _feature_columns(names: list[str], schema: ModelSchema) -> list[str]:
    """The input column each preprocessed feature comes from (``numeric__amount`` ->
    ``amount``; ``categorical__device_pos`` -> ``device``, the longest matching column)."""
    out = []
    for n in names:
        tail = n.split("__", 1)[-1]
        if tail in schema.numeric or tail in schema.categorical:
            out.append(tail)
            continue
        matches = [c for c in schema.categorical if tail.startswith(f"{c}_")]
        out.append(max(matches, key=len) if matches else tail)
    return out


def _expected_values(pre, names: list[str], source: list[str], schema: ModelSchema, expected_t: np.ndarray) -> dict:
    """Per input column, the value the model expected for every row: numeric features
    mapped back through their scaler, categorical ones as the most expected category."""
    out: dict[str, list] = {}
    transformers = {name: trans for name, trans, _ in getattr(pre.steps[0][1], "transformers_", [])} \
        if len(pre.steps) == 1 else {}
    numeric_idx = [j for j, c in enumerate(source) if c in schema.numeric]
    if numeric_idx:
        block = expected_t[:, numeric_idx]
        num = transformers.get("numeric")
        scaler = num.named_steps.get("scale") if hasattr(num, "named_steps") else None
        if scaler is not None and hasattr(scaler, "inverse_transform") and block.shape[1] == scaler.n_features_in_:
            block = scaler.inverse_transform(block)
        for k, j in enumerate(numeric_idx):
            out[source[j]] = block[:, k].tolist()
    for col in schema.categorical:
        idx = [j for j, c in enumerate(source) if c == col]
        if not idx:
            continue
        cats = [names[j].split("__", 1)[-1][len(col) + 1:] for j in idx]
        best = np.argmax(expected_t[:, idx], axis=1)
        out[col] = [cats[b] for b in best]
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
    from gananomaly.pipelines.batch_score import load_model, score_frame

    if not hasattr(model, "score_samples"):
        model, _ = load_model(model)
    if not isinstance(data, pd.DataFrame):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no such input file {str(path)!r}")
        data = read_file(path)
    scores, _report = score_frame(model, data, id_column=id_column, extra_columns=extra_columns,
                                  on_bad_rows=on_bad_rows, unseen=unseen)
    return scores


# ---------------------------------------------------------------------------------- CLI
def _print_result(result: TabularResult) -> None:
    print(f"fitted on {result.n_train} rows ({len(result.numeric_columns)} numeric, "
          f"{len(result.categorical_columns)} categorical columns); held out {result.n_test}")
    if result.metrics is not None:
        print(result.metrics.round(4).to_string())
    if result.model_path is not None:
        print(f"model: {result.model_path}")
    if result.run_id is not None:
        print(f"mlflow run: {result.run_id}")


def _cmd_fit(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.experiment:
        config.experiment = args.experiment
    try:
        result = fit_tabular(config, output_dir=args.output, mlflow=False if args.no_mlflow else None,
                             tracking_uri=args.tracking_uri)
    except ConnectionError as exc:  # tracking store down: the fitted model was saved locally instead
        print(f"gananomaly tabular fit: error: {exc} (or run with --no-mlflow)", file=sys.stderr)
        return 1
    _print_result(result)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.batch_score import run_score_command

    id_column = args.id_column
    if id_column is None and args.config is not None:
        id_column = load_config(args.config).id_column
    args.id_column = id_column
    return run_score_command(args)


def register_cli(subparsers) -> None:
    """Add ``gananomaly tabular fit`` and ``gananomaly tabular score``."""
    from gananomaly.pipelines.batch_score import add_score_arguments

    tab = subparsers.add_parser("tabular", help="fit/score the tabular pipeline (CSV/Parquet/built-in tables)")
    tab_sub = tab.add_subparsers(dest="tabular_command", metavar="ACTION")
    tab_sub.required = True

    fit = tab_sub.add_parser("fit", help="fit the pipeline described by a TOML config")
    fit.add_argument("--config", required=True, help="TOML config (see pipelines/configs/)")
    fit.add_argument("--output", default=None, help="output directory (default: output.dir or runs/<name>)")
    fit.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    fit.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides the config)")
    fit.add_argument("--experiment", default=None, help="MLflow experiment (overrides the config)")
    fit.set_defaults(func=_cmd_fit)

    score = tab_sub.add_parser("score", help="score a CSV/Parquet file with a fitted pipeline (streamed)")
    score.add_argument("--config", default=None, help="the TOML config the model was fitted with (for its ID column)")
    add_score_arguments(score)
    score.set_defaults(func=_cmd_score)

