"""The ``gananomaly`` command (the top layer: it drives the library and the pipelines;
nothing in the library imports it).

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

from gananomaly.pipelines.cli_types import contamination_option, epochs_option, seed_arg

from gananomaly._args import positive_int_arg

__all__ = ["main", "build_parser"]

# Each is light to import (its command's work loads when the command runs), so that
# `gananomaly COMMAND --help` answers at once.
_COMMAND_MODULES = (
    "gananomaly.tracking_runs",
    "gananomaly.pipelines.table_cli",
    "gananomaly.pipelines.image_cli",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _demo(args: argparse.Namespace) -> int:
    from gananomaly.demo import run_demo

    run_demo(epochs=args.epochs, seed=args.seed, tracking=not args.no_mlflow,
             experiment=args.experiment, tracking_uri=args.tracking_uri)
    return 0


_epochs, _contamination = epochs_option, contamination_option


def _check_model_output(output: str) -> None:
    """Refuse, before any training, an ``--output`` the save would refuse (the save's own
    check, :func:`gananomaly.model_dir.check_target`): a missing or read-only parent
    directory, a file, a link, a directory that is not empty and not a gananomaly model."""
    import os
    from pathlib import Path

    from gananomaly.model_dir import check_target

    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--output {output!r}: {parent!r} is not an existing directory")
    try:
        check_target(Path(output))
    except (ValueError, OSError) as exc:
        raise CLIError(f"--output: {exc}") from exc


def _fit(args: argparse.Namespace) -> int:
    import os

    from gananomaly.data import read_numeric
    from gananomaly.estimator import GANAnomalyDetector

    if not os.path.exists(args.input):
        raise FileNotFoundError(f"--input {args.input!r} does not exist")
    if args.resume and args.checkpoint_dir is None:
        raise ValueError("--resume needs --checkpoint-dir (the directory whose checkpoint it continues)")
    _check_model_output(args.output)  # before a fit that may take hours
    X = read_numeric(args.input)
    det = GANAnomalyDetector(
        objective=args.objective, encoder=args.encoder, epochs=args.epochs, contamination=args.contamination,
        random_state=args.seed, verbose=1, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, max_time=args.max_time,
    )
    det.fit(X, resume=args.resume)
    det.save(args.output)
    print(f"saved model to {args.output} (offset {det.offset_:.4f}, {det.n_epochs_} epochs)")
    return 0


def _seconds(text: str) -> float:
    """``--max-time``: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from gananomaly._version import __version__

    parser = argparse.ArgumentParser(prog="gananomaly", description="Anomaly detection with GANs.")
    parser.add_argument("--version", action="version", version=f"gananomaly {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="fit on scikit-learn's breast-cancer data and print AUROC per score")
    demo.add_argument("--epochs", type=_epochs, default="auto", help="GAN epochs (default: auto)")
    demo.add_argument("--seed", type=seed_arg, default=0, help="random_state of the detector")
    demo.add_argument("--experiment", default="gananomaly-demo", help="MLflow experiment name")
    demo.add_argument("--tracking-uri", default=None,
                      help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    demo.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit a detector on a numeric table (.npy/.npz/.csv/.parquet) and save it")
    fit.add_argument("--input", required=True, help="training data (normal rows)")
    fit.add_argument("--output", required=True, help="model directory to write (replaced atomically)")
    fit.add_argument("--epochs", type=_epochs, default="auto",
                     help="GAN epochs (default: auto, stopped by the fidelity measure)")
    fit.add_argument("--objective", default="auto", choices=["auto", "gan", "wgan-gp"],
                     help="the estimator's objective (default: auto)")
    fit.add_argument("--encoder", default="izif", choices=["izif", "bigan"],
                     help="the estimator's encoder (default: izif)")
    fit.add_argument("--contamination", type=_contamination, default="auto",
                     help="share of outliers expected: auto (default) or a float in (0, 0.5]")
    fit.add_argument("--seed", type=seed_arg, default=0, help="random_state of the detector")
    fit.add_argument("--max-time", type=_seconds, default=None,
                     help="stop the GAN phase after this many seconds (keeps the best generator so far)")
    fit.add_argument("--checkpoint-dir", default=None, help="write training checkpoints here")
    fit.add_argument("--checkpoint-every", type=positive_int_arg, default=10, help="epochs between checkpoints")
    fit.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    fit.set_defaults(func=_fit)

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
    _add_common_options(parser, __version__)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, version: str) -> None:
    """``--version`` and ``-v``/``--verbose`` on every command too (the README lists them
    under every command: ``gananomaly fit -v``, ``gananomaly tabular score -v``), whichever
    module registered it; the ``-v`` given after the command adds to the one before it."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for command in (c for group in groups for c in group.choices.values()):
        if any(isinstance(a, argparse._SubParsersAction) for a in command._actions):
            _add_common_options(command, version)  # a group of commands (tabular, image, runs)
            continue
        command.add_argument("--version", action="version", version=f"gananomaly {version}")
        command.add_argument("-v", "--verbose", dest="command_verbose", action="count",
                             default=argparse.SUPPRESS, help="more logging (repeat for debug)")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types the command reports in one line: bad input and parameters, files and
    permissions, damaged model files, devices and memory (torch raises RuntimeError)."""
    errors: list[type[BaseException]] = [CLIError, ValueError, TypeError, OSError, RuntimeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    if "mlflow" in sys.modules:  # a refused tracking URI or store, a run or model not found
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)
    return tuple(errors)


def _message(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, RecursionError):
        message = f"input nested too deeply ({message})"
    return message


_COMMANDS = ("demo", "fit", "score", "tabular", "image", "runs")


def _quick_answer(argv: list[str]) -> int | None:
    """``--version`` and the top-level ``--help`` without importing torch or the pipelines."""
    if argv == ["--version"]:
        from gananomaly._version import __version__

        print(f"gananomaly {__version__}")
        return 0
    if argv in (["-h"], ["--help"]):
        print("usage: gananomaly [-h] [--version] [-v] COMMAND ...\n\nAnomaly detection with GANs.\n\n"
              f"commands: {', '.join(_COMMANDS)}\n\n`gananomaly COMMAND --help` describes a command.")
        return 0
    return None


def main(argv: Sequence[str] | None = None) -> int:
    quick = _quick_answer(list(sys.argv[1:] if argv is None else argv))
    if quick is not None:
        return quick
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += vars(args).pop("command_verbose", 0)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except _expected_errors() as exc:
        # Expected failures (bad input, files, devices): one line, rc 2; -v adds the traceback.
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"gananomaly {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = {"score": "; rerun with --resume to continue from the finished chunks",
                "fit": "; with --checkpoint-dir, rerun with --resume to continue"}.get(args.command, "")
        print(f"gananomaly {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
