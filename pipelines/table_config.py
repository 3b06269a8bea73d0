"""The tabular job's config: :class:`TabularConfig` and :func:`load_config` (TOML).

Every key is validated where it enters (a bad key or value raises ValueError naming it), so
the jobs built on a config trust it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TabularConfig", "load_config", "MISSING_CATEGORY", "EXTRA_POLICIES", "BAD_ROW_POLICIES",
           "UNSEEN_POLICIES"]

# The scoring jobs' choices for input they cannot use as it is (the command line offers them).
EXTRA_POLICIES = ("drop", "error")      # input columns the model does not use
BAD_ROW_POLICIES = ("error", "skip")    # rows that cannot be scored
UNSEEN_POLICIES = ("score", "error")    # categories not seen in training

_NUMERIC_IMPUTERS = ("median", "mean", "constant")
_SCALERS = ("standard", "robust", "minmax", "none")
_CATEGORICAL_IMPUTERS = ("most_frequent", "constant")
_FIT_ON = ("normal", "all")
MISSING_CATEGORY = "__missing__"

_KEYS: dict[str, set[str]] = {
    "": {"name", "data", "preprocessing", "split", "detector", "mlflow", "output"},
    "data": {"path", "format", "builtin", "options", "id_columns", "drop_columns", "label_column",
             "anomaly_values", "numeric_columns", "categorical_columns", "context_column"},
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
    context_column : str or None
        A column whose values are categories (a machine, a tier, an hour bucket) that each row
        is judged *for*: the GAN becomes conditional, and a row is normal or not for its own
        context (no feature itself). Scoring needs the column too; a value never seen in
        training, or a missing one, makes a row unscorable (``on_bad_rows``).
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
        Seed of the split, and of the detector unless ``detector`` sets its own.
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
    context_column: str | None = None
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
        if self.path is not None and self.builtin is not None:
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
        if self.context_column is not None:
            _check_str("data.context_column", self.context_column)
        if not isinstance(self.anomaly_values, list) or not self.anomaly_values:
            raise ValueError(f"data.anomaly_values must be a non-empty list, got {self.anomaly_values!r}")
        roles = {"id_columns": self.id_columns, "drop_columns": self.drop_columns,
                 "label_column": [self.label_column] if self.label_column else [],
                 "numeric_columns": self.numeric_columns or [], "categorical_columns": self.categorical_columns or [],
                 "context_column": [self.context_column] if self.context_column else []}
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
        from gananomaly.model_format import with_tuples

        params = dict(self.detector)
        params.setdefault("random_state", self.random_state)  # a config's run is reproducible unless it says otherwise
        valid = set(GANAnomalyDetector().get_params(deep=False)) - {"callbacks"}
        unknown = sorted(set(params) - valid)
        if unknown:
            raise ValueError(f"detector: unknown parameter(s) {unknown}; valid: {sorted(valid)}")
        det = GANAnomalyDetector(**with_tuples(params))  # TOML arrays as the tuples the detector takes
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
        config = TabularConfig.from_dict(raw, base_dir=path.resolve().parent)
        if config.path is None and config.builtin is None:  # a config file names its data
            raise ValueError("data: give exactly one of data.path (a CSV/Parquet file) and data.builtin "
                             "(got neither)")
        return config
    except ValueError as exc:
        raise ValueError(f"config {str(path)!r}: {exc}") from exc
