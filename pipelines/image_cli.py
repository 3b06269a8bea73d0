"""The ``gananomaly image fit|score|demo|throughput`` command.

Only argparse at import time: the image job's modules (and torch) load when a command runs,
so ``gananomaly image ... --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gananomaly.pipelines.cli_types import epochs_option, seed_arg

__all__ = ["register_cli", "main"]


def _parse_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(pairs: list[str] | None, epochs: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param must be KEY=VALUE, got {pair!r}")
        value = _parse_value(value)
        if key in params:
            raise ValueError(f"--param {key} is given twice; give each parameter once")
        params[key] = tuple(value) if isinstance(value, list) else value
    if epochs is not None:
        if "epochs" in params:
            raise ValueError("--epochs and --param epochs=... both set the epochs; give one of them")
        params["epochs"] = epochs
    return params


def _cli_fit(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.image_fit import fit_images

    if args.size is not None and len(args.size) not in (1, 2):
        raise ValueError(f"--size takes N or H W, got {len(args.size)} numbers")
    size = None if args.size is None else (args.size[0], args.size[-1])
    params = _params(args.param, args.epochs)
    params.setdefault("random_state", args.seed)
    result = fit_images(args.data, args.model_dir, mode=args.mode, size=size, on_error=args.on_error,
                        channels=args.channels, scores_csv=args.scores, params=params, mlflow=not args.no_mlflow,
                        experiment=args.experiment, run_name=args.run_name, tracking_uri=args.tracking_uri)
    det = result["model"]
    print(f"fitted on {det.image_shape_} images in {result['fit_seconds']:.1f} s; model saved to {args.model_dir}")
    if result["run_id"]:
        print(f"MLflow run {result['run_id']}")
    for name, why in result["skipped"]:
        print(f"skipped {name}: {why}")
    for kind, value in result["auroc"].items():
        print(f"AUROC {kind}: {value:.4f}")
    if args.scores:
        print(f"scores written to {args.scores}")
    return 0


def _cli_score(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.image_scoring import auroc_per_kind, score_images_and_data

    frame, data = score_images_and_data(args.model_dir, args.data, args.out, on_error=args.on_error,
                                        channels=args.channels, maps_dir=args.maps)
    print(f"scored {len(frame)} images; {int((frame['label'] == -1).sum())} flagged as outliers"
          + (f"; scores written to {args.out}" if args.out else ""))
    if args.out is None:
        print(frame.to_string(index=False))
    if data.kinds is not None:
        for kind, value in auroc_per_kind(data.kinds, frame["combined"].to_numpy()).items():
            print(f"AUROC {kind}: {value:.4f}")
    return 0


def _cli_demo(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.image_fit import run_image_demo

    run_image_demo(args.task, digits=args.digits, epochs=args.epochs, seed=args.seed)
    return 0


def _cli_throughput(args: argparse.Namespace) -> int:
    from gananomaly.pipelines.image_fit import conv_throughput

    table = conv_throughput(tuple(args.sizes), channels=args.channels_count, n_images=args.n_images,
                            device=args.device)
    print(table.to_string())
    return 0


def register_cli(subparsers) -> None:
    """Add ``gananomaly image fit|score|demo|throughput`` to the ``gananomaly`` command."""
    image = subparsers.add_parser("image", help="image folders/arrays: fit, score, demo")
    sub = image.add_subparsers(dest="image_command", metavar="IMAGE_COMMAND")
    sub.required = True

    def common(p):
        p.add_argument("--on-error", choices=("skip", "raise"), default="skip",
                       help="unreadable image files: skip with a warning naming them (default) or stop")
        p.add_argument("--channels", choices=("auto", "first", "last"), default="auto",
                       help="layout of 4-D arrays in .npy/.npz sources")

    fit = sub.add_parser("fit", help="fit on DATA's normal images, evaluate, log to MLflow, save")
    fit.add_argument("data", help="folder (train/, test/normal/, test/<kind>/), .npy or .npz")
    fit.add_argument("--model-dir", required=True, help="where to save the model")
    fit.add_argument("--mode", choices=("grey", "rgb"), default="grey", help="colour conversion of image files")
    fit.add_argument("--size", type=int, nargs="+", metavar="N",
                     help="resize image files to N x N (or H W); default: the first training image's size")
    fit.add_argument("--scores", help="write per-file test scores to this .csv or .parquet file")
    fit.add_argument("--epochs", type=epochs_option, default=None, help="GAN epochs (default: auto)")
    fit.add_argument("--seed", type=seed_arg, default=0, help="random_state of the detector (default 0)")
    fit.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="detector parameter (JSON value), e.g. --param latent_dim=32; repeatable")
    fit.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    fit.add_argument("--experiment", default="gananomaly-images", help="MLflow experiment name")
    fit.add_argument("--run-name", default=None, help="MLflow run name")
    fit.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    common(fit)
    fit.set_defaults(func=_cli_fit)

    score = sub.add_parser("score", help="score images with a saved model; per-file table")
    score.add_argument("model_dir", help="the model directory written by image fit")
    score.add_argument("data", help="folder of images (its test/ subfolder if present), .npy or .npz")
    score.add_argument("--out", default=None, help=".csv or .parquet file to write (default: print the table)")
    score.add_argument("--maps", default=None, metavar="DIR",
                       help="write one heat-map overlay PNG per image into DIR (anomaly map in red)")
    common(score)
    score.set_defaults(func=_cli_score)

    demo = sub.add_parser("demo", help="built-in data: AUROC next to IsolationForest on raw pixels")
    demo.add_argument("--task", choices=("digits", "texture"), default="digits",
                      help="digits (one class at a time) or texture (planted defects)")
    demo.add_argument("--digits", type=int, nargs="+", default=None, help="normal digits to try (default 0..9)")
    demo.add_argument("--epochs", type=epochs_option, default="auto", help="GAN epochs (default: auto)")
    demo.add_argument("--seed", type=seed_arg, default=0, help="random_state of the detector (default 0)")
    demo.set_defaults(func=_cli_demo)

    thr = sub.add_parser("throughput", help="images/s of the conv detector (training and scoring)")
    thr.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sides to measure (default: 32 64)")
    thr.add_argument("--channels-count", type=int, choices=(1, 3), default=3, help="1 (grey) or 3 (RGB) channels")
    thr.add_argument("--n-images", type=int, default=1024, help="random images per measurement (default 1024)")
    thr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    thr.set_defaults(func=_cli_throughput)


def main(argv: list[str] | None = None) -> int:
    """``python -m gananomaly.pipelines.image ACTION ...``: the ``gananomaly image`` command on its
    own (this module does not import the ``gananomaly`` command, which sits above it). Bad input
    and file errors print one line and return 2, as the command does."""
    parser = argparse.ArgumentParser(prog="gananomaly")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["image", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"gananomaly image: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
