"""The ``gananomaly`` command.

Subcommands live next to the code they drive: every module listed in ``_COMMAND_MODULES``
exposes ``register_cli(subparsers)`` that adds its own subcommands, each setting
``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = (
    "gananomaly.tracking",
    "pipelines.tabular",
    "pipelines.image",
    "pipelines.batch_score",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _demo(args: argparse.Namespace) -> int:
    from gananomaly.demo import run_demo

    run_demo(epochs=args.epochs, seed=args.seed, tracking=not args.no_mlflow,
             experiment=args.experiment, tracking_uri=args.tracking_uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gananomaly._version import __version__

    parser = argparse.ArgumentParser(prog="gananomaly", description="Anomaly detection with GANs.")
    parser.add_argument("--version", action="version", version=f"gananomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="fit on scikit-learn's breast-cancer data and print AUROC per score")
    demo.add_argument("--epochs", default="auto", help="GAN epochs (default: auto)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--experiment", default="gananomaly-demo", help="MLflow experiment name")
    demo.add_argument("--tracking-uri", default=None,
                      help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    demo.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    demo.set_defaults(func=_demo)

    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command module is not part of this installation
                continue
            raise
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, PermissionError) as exc:
        print(f"gananomaly {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gananomaly {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
