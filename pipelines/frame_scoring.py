"""Scoring a table in memory: the one scoring output of a fitted model for prepared rows
(:func:`score_prepared`) and a DataFrame under the bad-input policies (:func:`score_frame`,
which also reports what it skipped in a :class:`ScoreReport`).

Values too large to score
-------------------------
The networks compute in float32: a value standardised by the detector's own training
scale (``input_mean_``, ``input_scale_``, after a pipeline's preprocessing) beyond
:data:`MAX_STANDARDISED` (or not finite) would come out as an infinite score. Such rows are
bad rows (``on_bad_rows``): an error naming rows, columns and values, or skipped and
counted in ``bad_values``. A row whose scores still come out non-finite is treated the
same way, so the output never holds inf or NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines.csv_input import check_unique
from gananomaly.pipelines.table_config import BAD_ROW_POLICIES, EXTRA_POLICIES, UNSEEN_POLICIES

from gananomaly import context as _context
from gananomaly import estimator as _estimator
from gananomaly.explanations import (
    ModelSchema,
    format_rows,
    input_columns,
    model_input,
    model_schema,
    prepare_frame,
    top_columns,
)

__all__ = ["SCORE_COLUMNS", "MAX_STANDARDISED", "EXTRA_POLICIES", "BAD_ROW_POLICIES", "UNSEEN_POLICIES",
           "MAX_LISTED_ROWS", "ScoreReport", "check_policy", "check_columns", "output_columns", "score_prepared",
           "score_frame"]

log = logging.getLogger(__name__)

SCORE_COLUMNS = _estimator.SCORE_COLUMNS
#: Skipped row numbers listed in a report (the count is always complete).
MAX_LISTED_ROWS = 1000
#: A value further than this many training standard deviations (the detector's
#: ``input_scale_``) from the training mean (``input_mean_``) is not scored: the networks
#: compute in float32 and such inputs overflow to inf a few layers in (1e20 already gives
#: an infinite score). The row is a bad row (``on_bad_rows``). The bound sits far above any
#: plausible anomaly, which is still scored (and scores as one).
MAX_STANDARDISED = 1e6


def score_prepared(model, X, context=None) -> pd.DataFrame:
    """Scores of rows already converted by :func:`gananomaly.pipelines.tabular.prepare_frame`
    (with each row's ``context``, for a detector fitted with one).

    One pass through the networks gives all five columns; ``score`` and ``label`` equal
    ``model.score_samples(X)`` and ``model.predict(X)`` exactly.
    """
    if len(X) == 0:
        return _empty_scores()
    return _score_transformed(*_transform(model, X), context)


def _empty_scores() -> pd.DataFrame:
    return _estimator.empty_score_table()


def _transform(model, X) -> tuple[Any, Any]:
    """(detector, X after the pipeline's preprocessing): what the detector itself sees."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return model.steps[-1][1], (model[:-1].transform(X) if len(model.steps) > 1 else X)
    return model, X


def _score_transformed(det, Xt, context=None) -> pd.DataFrame:
    if len(Xt) == 0:
        return _empty_scores()
    return det.score_table(Xt, context=context).reset_index(drop=True)


def _standardised(det, Xt) -> np.ndarray | None:
    """``|Xt - input_mean_| / input_scale_`` (the detector's own standardisation, in float64;
    NaN where a value is not finite), or None when the detector has no such scaler."""
    mean, scale = getattr(det, "input_mean_", None), getattr(det, "input_scale_", None)
    try:
        A = np.asarray(Xt, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if mean is None or scale is None or A.ndim != 2 or np.shape(mean) != (A.shape[1],):
        return None
    with np.errstate(all="ignore"):
        z = np.abs((A - np.asarray(mean, dtype=np.float64)) / np.asarray(scale, dtype=np.float64))
    z[~np.isfinite(A)] = np.nan
    return z


def _feature_sources(model, Xt, raw_columns: list[str]) -> list[str]:
    """For each column the detector sees, the input column it comes from (for messages):
    the ColumnTransformer's ``<transformer>__<column>`` names mapped back to input columns."""
    from sklearn.pipeline import Pipeline

    width = np.shape(Xt)[1]
    names: list[str] = list(map(str, raw_columns))
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        try:
            names = [str(n) for n in model[:-1].get_feature_names_out()]
        except Exception:  # a step without feature names: positions are all we can tell
            names = [str(j) for j in range(width)]
    if len(names) != width:
        names = [str(j) for j in range(width)]
    raw = set(map(str, raw_columns))
    out = []
    for n in names:
        tail = n.split("__", 1)[-1]
        out.append(n if n in raw else tail if tail in raw else f"feature {n} (after preprocessing)")
    return out


@dataclass
class ScoreReport:
    """Counts of one scored table (or the sum over a file's chunks).

    Attributes
    ----------
    rows_read : int
        Data rows in the input (malformed CSV lines included).
    rows_scored : int
    skipped_rows : list of int (tables) or str (images)
        Row numbers (1-based data rows, header excluded) or image files that were skipped, at
        most 1000 listed.
    n_skipped : int
    bad_values : dict
        Column -> number of rows with unparseable values, values not finite or too large
        to score (beyond :data:`MAX_STANDARDISED`), or scores that came out non-finite.
    malformed_rows : int
        CSV lines with the wrong number of fields.
    unseen_categories : dict
        Column -> number of rows with a category not seen in training (scored as all-zero one-hot).
    unseen_examples : dict
        Column -> up to 5 ``[row, value]`` pairs.
    """

    rows_read: int = 0
    rows_scored: int = 0
    skipped_rows: list[int | str] = field(default_factory=list)
    n_skipped: int = 0
    bad_values: dict[str, int] = field(default_factory=dict)
    malformed_rows: int = 0
    unseen_categories: dict[str, int] = field(default_factory=dict)
    unseen_examples: dict[str, list] = field(default_factory=dict)

    def add(self, other: ScoreReport) -> None:
        self.rows_read += other.rows_read
        self.rows_scored += other.rows_scored
        self.n_skipped += other.n_skipped
        room = MAX_LISTED_ROWS - len(self.skipped_rows)
        self.skipped_rows.extend(other.skipped_rows[:max(room, 0)])
        self.malformed_rows += other.malformed_rows
        for key, value in other.bad_values.items():
            self.bad_values[key] = self.bad_values.get(key, 0) + value
        for key, value in other.unseen_categories.items():
            self.unseen_categories[key] = self.unseen_categories.get(key, 0) + value
        for key, value in other.unseen_examples.items():
            ex = self.unseen_examples.setdefault(key, [])
            ex.extend(value[: max(0, 5 - len(ex))])

    def to_dict(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "rows_scored": self.rows_scored, "n_skipped": self.n_skipped,
                "skipped_rows": list(self.skipped_rows), "bad_values": dict(self.bad_values),
                "malformed_rows": self.malformed_rows, "unseen_categories": dict(self.unseen_categories),
                "unseen_examples": {k: list(v) for k, v in self.unseen_examples.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScoreReport:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def check_policy(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_columns(columns: list[str], schema: ModelSchema, id_column: str | None, extra_columns: str,
                  where: str, ignore: Sequence[str] = (), explain: int = 0) -> list[str]:
    """Check the input's columns against the model; return the extra ones (``ignore``:
    columns known to be no features, such as a config's dropped columns, never extra).
    Refuses a repeated column name and an ID column named like a column of the output."""
    check_unique(list(columns), where)
    if id_column is not None:
        clash = output_columns(explain)
        if id_column in clash:
            raise ValueError(f"ID column {id_column!r} has the name of a column of the scores (output columns: "
                             f"{clash}); rename it in the input")
    if not schema.named:
        return []
    missing = [c for c in schema.required if c not in columns]
    if missing:
        raise ValueError(f"{where} is missing column(s) {missing} that the model needs "
                         f"(model columns: {schema.required}; input columns: {columns})")
    if id_column is not None and id_column not in columns:
        raise ValueError(f"{where} has no ID column {id_column!r} (input columns: {columns})")
    if id_column is not None and id_column in schema.required:
        raise ValueError(f"ID column {id_column!r} is one of the model's "
                         f"{'feature' if id_column in schema.columns else 'context'} columns")
    extra = [c for c in columns if c not in schema.required and c != id_column and c not in ignore]
    if extra and extra_columns == "error":
        raise ValueError(f"{where} has column(s) {extra} that the model was not fitted on "
                         "(use extra_columns='drop' / --extra-columns drop to ignore them)")
    return extra


def output_columns(explain: int = 0) -> list[str]:
    """The columns a scoring output holds besides the ID: the scores, then ``explain``
    pairs of explanation columns."""
    pairs = [f"explain_{k}_{what}" for k in range(1, explain + 1) for what in ("column", "contribution")]
    return list(SCORE_COLUMNS) + pairs


def _unseen(frame: pd.DataFrame, schema: ModelSchema, rows: np.ndarray, report: ScoreReport, unseen: str,
            where: str) -> np.ndarray:
    """Rows of ``frame`` holding a category never seen in training (counted in ``report``),
    or an error naming them under ``unseen="error"``."""
    any_unseen = np.zeros(len(frame), dtype=bool)
    for col in schema.categorical:
        known = schema.categories.get(col)
        if not known:
            continue
        values = frame[col]
        mask = values.notna().to_numpy() & ~values.isin(known).to_numpy()
        if not mask.any():
            continue
        if unseen == "error":
            bad_rows = rows[mask].tolist()
            raise ValueError(f"{where}: column {col!r} has categories not seen in training in rows "
                             f"{format_rows(bad_rows)} (e.g. {values[mask].unique()[:5].tolist()!r}; known: "
                             f"{sorted(known)[:20]}); use unseen='score' / --unseen score to score them")
        any_unseen |= mask
        report.unseen_categories[col] = report.unseen_categories.get(col, 0) + int(mask.sum())
        ex = report.unseen_examples.setdefault(col, [])
        for r, v in zip(rows[mask][:5].tolist(), values[mask][:5].tolist()):
            if len(ex) < 5:
                ex.append([int(r), v])
    return any_unseen


def score_frame(model, df: pd.DataFrame, *, id_column: str | None = None, extra_columns: str = "drop",
                on_bad_rows: str = "error", unseen: str = "score", row_numbers: np.ndarray | None = None,
                where: str = "input", schema: ModelSchema | None = None, explain: int = 0,
                _checked: bool = False) -> tuple[pd.DataFrame, ScoreReport]:
    """Score a DataFrame with a fitted model, applying the bad-input policies.

    Parameters
    ----------
    model : fitted GANAnomalyDetector or Pipeline ending in one
    df : DataFrame
    id_column : str, optional
        Copied to the output as its first column.
    extra_columns : {"drop", "error"}, default="drop"
        Columns the model does not use: dropped (with a warning) or an error.
    on_bad_rows : {"error", "skip"}, default="error"
        Rows with a value that is not a number in a numeric column, or one too large to
        score (see :data:`MAX_STANDARDISED`): an error naming the column, rows and values,
        or skipped (counted and listed in the report).
    unseen : {"score", "error"}, default="score"
        Categories not seen in training: scored (encoded as all zeros, counted in the
        report, and labelled -1: an outlier whatever its score) or an error naming the
        column and rows.
    row_numbers : ndarray, optional
        Row numbers used in messages (default 1, 2, ...).
    where : str
        Name of the input in messages.
    schema : ModelSchema, optional
        ``model_schema(model)`` when already known.
    explain : int, default=0
        Add each row's ``explain`` most responsible input columns (see
        :func:`gananomaly.explanations.top_columns`): ``explain_1_column``,
        ``explain_1_contribution``, ... (0: none).

    Returns
    -------
    (scores, report)
    """
    check_policy("extra_columns", extra_columns, EXTRA_POLICIES)
    check_policy("on_bad_rows", on_bad_rows, BAD_ROW_POLICIES)
    check_policy("unseen", unseen, UNSEEN_POLICIES)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    schema = schema or model_schema(model)
    df = df.rename(columns=str)
    if not _checked:
        extra = check_columns(list(df.columns), schema, id_column, extra_columns, where, explain=explain)
        if extra:
            log.warning("%s: ignoring column(s) the model does not use: %s", where, extra)
    rows = np.arange(1, len(df) + 1) if row_numbers is None else np.asarray(row_numbers)
    context = None
    if schema.context:
        context, fit, problems = _context_rows(df, schema, rows, on_bad_rows, where)
        if not fit.all():  # score the rows whose context the model knows; count the others as skipped
            scores, report = score_frame(model, df.iloc[np.flatnonzero(fit)], id_column=id_column,
                                         on_bad_rows=on_bad_rows, unseen=unseen, row_numbers=rows[fit], where=where,
                                         schema=schema, explain=explain, _checked=True)
            report.rows_read = len(df)
            report.n_skipped += int((~fit).sum())
            report.skipped_rows = sorted(report.skipped_rows + rows[~fit].tolist())[:MAX_LISTED_ROWS]
            for col, mask, _what, _note in problems:
                report.bad_values[col] = report.bad_values.get(col, 0) + int(mask.sum())
            return scores, report
    report = ScoreReport(rows_read=len(df))
    # Without an imputer (a bare detector, or preprocessing that fills nothing) a missing number is
    # a bad value, named with the others by its row in the input.
    frame, keep, raw_columns = _prepared(df, schema, id_column, rows, on_bad_rows, where, report,
                                         not _imputes(model))
    det, Xt, z, sources = None, frame, None, []
    if len(frame):  # (a pipeline's preprocessing refuses zero rows)
        # categories in the type their encoder was fitted on (prepare_frame gave them as text)
        det, Xt = _transform(model, model_input(frame, schema) if schema.named else frame)
        z = _standardised(det, Xt)
        sources = _feature_sources(model, Xt, raw_columns) if z is not None else []
        if context is not None:  # the context of the rows kept
            context = context.iloc[np.flatnonzero(keep)]
        drop = _unscorable_values(z, sources, df, rows, keep, on_bad_rows, where, report)
        if drop.any():
            frame, Xt = _take(frame, ~drop), _take(Xt, ~drop)
            z = z[~drop]
            if context is not None:
                context = context.iloc[np.flatnonzero(~drop)]
    unseen_rows = _unseen(frame, schema, rows[keep], report, unseen, where) if schema.named else None
    scores = _score_transformed(det, Xt, context)
    if unseen_rows is not None and unseen_rows.any():
        # A category the model never saw is encoded as all zeros, which can look normal:
        # such rows are outliers by definition, whatever their score.
        scores.loc[unseen_rows, "label"] = -1
    if explain:
        why = top_columns(model, frame, explain, context=context)
        if not schema.named:  # the model's x0, x1, ... are the input's columns in order: use their names
            names = dict(zip(input_columns(model), raw_columns))
            for c in why.columns[::2]:
                why[c] = why[c].map(names)
        scores = pd.concat([scores, why], axis=1)
    if len(scores):
        drop = _nonfinite_scores(scores, z, sources, rows, keep, on_bad_rows, where, report)
        if drop.any():
            scores = scores.loc[~drop].reset_index(drop=True)
    report.n_skipped = int((~keep).sum())
    report.skipped_rows = rows[~keep][:MAX_LISTED_ROWS].tolist()
    if id_column is not None:
        # the column's own array (a nullable integer ID stays integer: to_numpy made it floats)
        scores.insert(0, id_column, df[id_column].array[np.flatnonzero(keep)])
    scores.index = df.index[keep]  # the input's labels of the rows scored: joins back onto the input
    report.rows_scored = len(scores)
    return scores, report


def _context_rows(df: pd.DataFrame, schema: ModelSchema, rows: np.ndarray, on_bad_rows: str,
                  where: str) -> tuple[Any, np.ndarray, list]:
    """(the context of ``df``'s rows, mask of the rows whose context the model can use, the
    problems of :func:`gananomaly.context.table_problems`): a
    missing context, a category never seen in training or a numeric context that is no
    finite number is an error naming the column and rows under ``on_bad_rows="error"``,
    else those rows are skipped (logged)."""
    ctx, problems = _context.table_problems(df, schema.context, schema.context_categories)
    fit = np.ones(len(df), dtype=bool)
    parts = []
    for col, mask, what, note in problems:
        fit &= ~mask
        examples = df[col][mask].head(3).tolist()
        parts.append(f"context column {col!r} {what} in rows {format_rows(rows[mask].tolist())}"
                     + (f" (e.g. {examples!r})" if not all(pd.isna(v) for v in examples) else "")
                     + (f"; {note}" if note else ""))
    if parts:
        _skip_message(on_bad_rows, where, "rows whose context the model cannot use", "; ".join(parts))
    return ctx, fit, problems


def _imputes(model) -> bool:
    """Whether a model's preprocessing fills missing values: an imputer in any step, nested in
    pipelines and column transformers."""
    def walk(obj) -> bool:
        if "Imputer" in type(obj).__name__:
            return True
        for attr in ("steps", "transformers_"):
            if any(not isinstance(item[1], str) and walk(item[1]) for item in getattr(obj, attr, None) or []):
                return True
        return False

    return hasattr(model, "steps") and any(walk(step) for _, step in model.steps[:-1])


def _prepared(df: pd.DataFrame, schema: ModelSchema, id_column: str | None, rows: np.ndarray, on_bad_rows: str,
              where: str, report: ScoreReport, missing_is_bad: bool) -> tuple[Any, np.ndarray, list[str]]:
    """(the model's columns converted, mask of kept rows of ``df``, the input columns the
    detector's features come from); bad values counted in ``report``. A model fitted on an
    unnamed array takes the input's columns (bar the ID) in order, as an array."""
    if schema.named:
        frame, keep, bad = prepare_frame(df, schema, row_numbers=rows, on_bad_rows=on_bad_rows, where=where,
                                         missing_is_bad=missing_is_bad)
        raw_columns = list(schema.numeric)
    else:
        feats = df.drop(columns=([id_column] if id_column else []) + [c for c in schema.context if c in df.columns])
        if feats.shape[1] != len(schema.numeric):
            raise ValueError(f"{where} has {feats.shape[1]} feature column(s); the model expects {len(schema.numeric)}")
        raw_columns = [str(c) for c in feats.columns]
        frame, keep, bad = prepare_frame(feats, ModelSchema(raw_columns, []), row_numbers=rows,
                                         on_bad_rows=on_bad_rows, where=where, missing_is_bad=missing_is_bad)
        frame = frame.to_numpy()
    for col, r in bad.items():
        report.bad_values[col] = len(r)
    return frame, keep.copy(), raw_columns


def _take(X, mask: np.ndarray):
    return X.loc[X.index[mask]] if isinstance(X, pd.DataFrame) else X[mask]


def _skip_message(on_bad_rows: str, where: str, what: str, details: str) -> None:
    """Raise (policy "error") or log (policy "skip") rows that cannot be scored."""
    if on_bad_rows == "error":
        raise ValueError(f"{where}: {what}: {details}. Fix them or skip those rows (on_bad_rows='skip', "
                         "--on-bad-rows skip)")
    log.warning("%s: skipping rows: %s: %s", where, what, details)


def _unscorable_values(z: np.ndarray | None, sources: list[str], df: pd.DataFrame, rows: np.ndarray,
                       keep: np.ndarray, on_bad_rows: str, where: str, report: ScoreReport) -> np.ndarray:
    """Rows (of the kept ones) with a value the networks cannot score: not finite as the
    detector sees it, or more than :data:`MAX_STANDARDISED` training scales from the training
    mean (float32 arithmetic overflows to inf a few layers later). ``on_bad_rows`` decides:
    an error naming rows and columns, or the rows are dropped from ``keep`` and counted per
    column in ``report.bad_values``. Returns the mask of dropped rows."""
    if z is None:
        return np.zeros(int(keep.sum()), dtype=bool)
    bad = ~(z <= MAX_STANDARDISED)  # NaN (a value that is not finite) included
    drop = bad.any(axis=1)
    if not drop.any():
        return drop
    pos = np.flatnonzero(keep)
    per_col: dict[str, np.ndarray] = {}
    for j in np.flatnonzero(bad.any(axis=0)):
        per_col[sources[j]] = per_col.get(sources[j], np.zeros(len(drop), dtype=bool)) | bad[:, j]
    parts = []
    for col, m in per_col.items():
        example = df[col].iloc[pos[m][:3]].tolist() if col in df.columns else []
        parts.append(f"column {col!r}: rows {format_rows(rows[pos[m]].tolist())}"
                     + (f" (e.g. {example!r})" if example else ""))
        report.bad_values[col] = report.bad_values.get(col, 0) + int(m.sum())
    _skip_message(on_bad_rows, where, f"values that are not finite or too large to score (more than "
                  f"{MAX_STANDARDISED:g} training standard deviations from the training mean)", "; ".join(parts))
    keep[pos[drop]] = False
    return drop


def _nonfinite_scores(scores: pd.DataFrame, z: np.ndarray | None, sources: list[str], rows: np.ndarray,
                      keep: np.ndarray, on_bad_rows: str, where: str, report: ScoreReport) -> np.ndarray:
    """The last guard: rows whose scores are not finite are an error or skipped, never written."""
    values = scores[[c for c in SCORE_COLUMNS if c != "label"]].to_numpy(dtype=np.float64)
    drop = ~np.isfinite(values).all(axis=1)
    if not drop.any():
        return drop
    pos = np.flatnonzero(keep)
    detail = f"rows {format_rows(rows[pos[drop]].tolist())}"
    culprit = "(scores)"
    if z is not None and z.shape[1]:
        j = int(np.nanargmax(np.nan_to_num(z[drop], nan=np.inf).max(axis=0)))
        culprit = sources[j]
        detail += f"; the most extreme value is in column {culprit!r}"
    _skip_message(on_bad_rows, where, "the model's scores are not finite", detail)
    report.bad_values[culprit] = report.bad_values.get(culprit, 0) + int(drop.sum())
    keep[pos[drop]] = False
    return drop
