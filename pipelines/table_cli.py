"""The table jobs' command line: ``gananomaly tabular fit|score`` and ``gananomaly score``
(the top layer of the table jobs: it drives :mod:`~gananomaly.pipelines.tabular` and
:mod:`~gananomaly.pipelines.batch_score`; nothing imports it but :mod:`gananomaly.pipelines.cli`).

Light to import: the jobs (and torch) load when a command runs, so ``--help`` answers at once."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from gananomaly.pipelines.table_config import BAD_ROW_POLICIES, EXTRA_POLICIES, UNSEEN_POLICIES, load_config

from gananomaly._args import positive_int_arg

__all__ = ["add_score_arguments", "threshold_arg", "run_score_command", "register_cli"]


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``gananomaly score`` and ``gananomaly tabular score``."""
    parser.add_argument("--model", required=True,
                        help="model directory (gananomaly save) or MLflow model URI (runs:/..., models:/...)")
    parser.add_argument("--input", required=True,
                        help="input .csv or .parquet file; for an image model a folder of image files, .npy or .npz")
    parser.add_argument("--output", required=True, help="output .csv or .parquet file (written atomically)")
    parser.add_argument("--id-column", default=None, help="input column copied to the output")
    parser.add_argument("--chunk-rows", type=positive_int_arg, default=50_000,
                        help="rows per chunk (memory bound, resume unit)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its finished chunks")
    parser.add_argument("--on-bad-rows", choices=BAD_ROW_POLICIES, default=None,
                        help="rows with unparseable numbers, values too large to score or malformed CSV lines, "
                             "unreadable image files: error or skip (default: error for tables, skip for a "
                             "folder of images)")
    parser.add_argument("--extra-columns", choices=EXTRA_POLICIES, default="drop",
                        help="input columns the model does not use: drop with a warning (default) or error")
    parser.add_argument("--unseen", choices=UNSEEN_POLICIES, default="score",
                        help="categories not seen in training: score them as unknown (default) or error")
    parser.add_argument("--explain", type=positive_int_arg, default=0, metavar="K",
                        help="add each row's K most responsible input columns and their contributions "
                             "(explain_1_column, explain_1_contribution, ...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--contamination", default=None,
                       help="label this share of the training rows' score distribution as outliers ('auto' or a "
                            "float in (0, 0.5]) instead of the model's threshold")
    group.add_argument("--fpr", type=float, default=None,
                       help="label as outliers scores below the training rows' FPR quantile (a float in (0, 1))")
    group.add_argument("--threshold", type=float, default=None,
                       help="label as outliers rows whose score is below this value")


def threshold_arg(args: argparse.Namespace) -> dict[str, Any] | None:
    if getattr(args, "contamination", None) is not None:
        value = args.contamination
        try:
            value = value if value == "auto" else float(value)
        except ValueError:
            raise ValueError(f"--contamination must be 'auto' or a number, got {value!r}") from None
        return {"contamination": value}
    if getattr(args, "fpr", None) is not None:
        return {"fpr": args.fpr}
    if getattr(args, "threshold", None) is not None:
        if not math.isfinite(args.threshold):
            raise ValueError(f"--threshold must be a finite number, got {args.threshold!r}")
        return {"score": args.threshold}
    return None


def run_score_command(args: argparse.Namespace) -> int:
    """Run ``score_file`` from parsed arguments and print a one-line summary."""
    from gananomaly.pipelines.batch_score import score_file
    from gananomaly.pipelines.table_data import format_rows

    stats = score_file(args.model, args.input, args.output, id_column=args.id_column, chunk_rows=args.chunk_rows,
                       resume=args.resume, extra_columns=args.extra_columns, on_bad_rows=args.on_bad_rows,
                       unseen=args.unseen, progress=False if args.no_progress else None,
                       threshold=threshold_arg(args), explain=args.explain,
                       ignore_columns=getattr(args, "ignore_columns", ()))
    line = (f"scored {stats['rows_scored']} of {stats['rows_read']} rows in {stats['seconds']:.1f} s "
            f"({stats['rows_per_s']:.0f} rows/s) -> {stats['output']}")
    if stats["chunks_reused"]:
        line += f"; resumed {stats['chunks_reused']} of {stats['chunks']} chunks"
    print(line)
    if stats["n_skipped"]:
        what = "file(s)" if any(isinstance(r, str) for r in stats["skipped_rows"]) else "row(s)"
        print(f"skipped {stats['n_skipped']} {what}: {format_rows(stats['skipped_rows'])}")
    for col, count in stats["unseen_categories"].items():
        print(f"{count} row(s) with unseen categories in column {col!r}")
    return 0


def _print_result(result) -> None:
    context = getattr(result.pipeline[-1], "context_names_", None)
    print(f"fitted on {result.n_train} rows ({len(result.numeric_columns)} numeric, "
          f"{len(result.categorical_columns)} categorical columns"
          f"{'; each row judged for its ' + repr(context[0]) if context else ''}); held out {result.n_test}")
    if result.metrics is not None:
        print(result.metrics.round(4).to_string())
    if result.model_path is not None:
        print(f"model: {result.model_path}")
    if result.run_id is not None:
        print(f"mlflow run: {result.run_id}")


def _cmd_fit(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.tabular import fit_tabular

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
    if args.config is not None:
        config = load_config(args.config)
        if args.id_column is None:
            args.id_column = config.id_column
        # columns the config itself keeps out of the model: no "ignoring column" warning for them
        known = [*config.drop_columns, *config.id_columns, *([config.label_column] if config.label_column else [])]
        args.ignore_columns = [c for c in known if c != args.id_column]
    return run_score_command(args)


def register_cli(subparsers) -> None:
    """Add ``gananomaly tabular fit``, ``gananomaly tabular score`` and ``gananomaly score``."""
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

    top_score = subparsers.add_parser("score", help="stream a CSV/Parquet file through a fitted model, atomically")
    add_score_arguments(top_score)
    top_score.set_defaults(func=run_score_command)
