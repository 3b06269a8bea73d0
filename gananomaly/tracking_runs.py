"""Runs side by side: :func:`compare_runs` and the ``gananomaly runs compare`` command.

Light to import (pandas and MLflow load when runs are compared), so the command's ``--help``
answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["compare_runs", "register_cli"]

_LOWER_IS_BETTER = ("time", "loss")


def compare_runs(experiment: str, *, sort_by: str = "auroc_combined", tracking_uri: str | None = None,
                 max_runs: int = 50) -> pd.DataFrame:
    """A table of the runs of ``experiment``: differing params, AUROC per component, fit time.

    Parameters
    ----------
    experiment : str
        Experiment name.
    sort_by : str, default="auroc_combined"
        A metric name (``metrics.`` prefix optional). Times and losses sort ascending,
        everything else descending; runs without the metric go last.
    tracking_uri : str, optional
        Default as :func:`resolve_tracking_uri`.
    max_runs : int, default=50
        The most recent runs considered.

    Returns
    -------
    DataFrame indexed by run id with columns ``run_name``, ``status``, the parameters whose
    values differ between runs, ``auroc_*`` and ``fit_time_s``.

    Raises
    ------
    ValueError
        Unknown experiment, or ``sort_by`` is not a metric of any run.
    """
    from numbers import Integral

    import mlflow

    if not isinstance(max_runs, Integral) or isinstance(max_runs, bool) or max_runs < 1:
        raise ValueError(f"max_runs must be an integer >= 1, got {max_runs!r}")
    import pandas as pd

    from gananomaly.tracking_store import probe_http, resolve_tracking_uri, sqlite_path, tracking_scope

    uri = resolve_tracking_uri(tracking_uri)
    db = sqlite_path(uri)
    if db is not None and db != ":memory:" and not os.path.exists(db):
        # Reading must not create an empty store as a side effect.
        raise ValueError(f"no MLflow store at {uri} ({os.path.abspath(db)} does not exist)")
    probe_http(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment named {experiment!r} in {uri}")
    with tracking_scope(uri):
        runs = mlflow.search_runs(experiment_ids=[exp.experiment_id], max_results=int(max_runs),
                                  order_by=["attributes.start_time DESC"], output_format="pandas")
    sort_key = sort_by if sort_by.startswith("metrics.") else f"metrics.{sort_by}"
    if runs.empty:
        return pd.DataFrame(columns=["run_name", "status"])
    if sort_key not in runs.columns:
        available = sorted(c[len("metrics."):] for c in runs.columns if c.startswith("metrics."))
        raise ValueError(f"sort_by: no run of {experiment!r} has a metric {sort_by!r}; available: {available}")
    param_cols = [c for c in runs.columns if c.startswith("params.")]
    differing = [c for c in param_cols if runs[c].astype(str).nunique(dropna=False) > 1]
    metric_cols = sorted(c for c in runs.columns if c.startswith("metrics.auroc_"))
    if "metrics.fit_time_s" in runs.columns:
        metric_cols.append("metrics.fit_time_s")
    if sort_key not in metric_cols:
        metric_cols.append(sort_key)
    table = pd.DataFrame(index=runs["run_id"].to_numpy())
    table.index.name = "run_id"
    table["run_name"] = runs.get("tags.mlflow.runName", pd.Series([""] * len(runs))).to_numpy()
    table["status"] = runs["status"].to_numpy()
    metric_names = {c[len("metrics."):] for c in metric_cols}
    for c in differing:  # a parameter named like a column of the table (status, run_name, a metric) is marked
        name = c[len("params."):]
        table[f"param.{name}" if name in table.columns or name in metric_names else name] = runs[c].to_numpy()
    for c in metric_cols:
        table[c[len("metrics."):]] = runs[c].to_numpy(dtype=float)
    ascending = any(s in sort_key for s in _LOWER_IS_BETTER)
    return table.sort_values(sort_key[len("metrics."):], ascending=ascending, na_position="last", kind="stable")


def _cmd_compare(args) -> int:
    import pandas as pd

    try:
        table = compare_runs(args.experiment, sort_by=args.sort_by, tracking_uri=args.tracking_uri,
                             max_runs=args.max)
    except ConnectionError as exc:
        print(f"gananomaly runs compare: error: {exc}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"experiment {args.experiment!r} has no runs")
        return 0
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def register_cli(subparsers) -> None:
    """Add ``gananomaly runs compare`` to the ``gananomaly`` command."""
    runs_sub = subparsers.add_parser("runs", help="inspect MLflow runs").add_subparsers(
        dest="runs_command", metavar="SUBCOMMAND", required=True)
    compare = runs_sub.add_parser("compare", help="table of the runs of an experiment, sorted by a metric")
    compare.add_argument("--experiment", required=True, help="MLflow experiment name")
    compare.add_argument("--sort-by", default="auroc_combined",
                         help="metric to sort by (default: auroc_combined; times/losses ascending)")
    compare.add_argument("--tracking-uri", default=None,
                         help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    compare.add_argument("--max", type=int, default=50, help="most recent runs to consider (default: 50)")
    compare.set_defaults(func=_cmd_compare)

