"""Image pipeline: image folders or arrays -> preprocessing -> detector -> MLflow -> model + score table.

Inputs
------
* A folder::

      DATA/train/...            normal images (any depth of subfolders)
      DATA/test/normal/...      optional: normal test images
      DATA/test/<defect-kind>/... optional: anomalous test images, one folder per kind
      DATA/test/*.png           optional: unlabelled test images

  Files are read with Pillow and converted to grey (``mode="grey"``) or RGB
  (``mode="rgb"``). Every image is resized (bilinear) to ``size``; with ``size=None``
  to the size of the first training image (sorted by path), and a warning counts the
  images that had another size. Unreadable or corrupt files are reported by name:
  ``on_error="skip"`` (default) skips them with a warning, ``on_error="raise"`` stops
  with an error listing them.
* A ``.npy`` file: the training images (fit) or the images to score (score), shaped
  ``(n, H, W)``, ``(n, C, H, W)`` or ``(n, H, W, C)`` (``channels`` as the estimator).
* A ``.npz`` file with ``train`` and optionally ``test`` and ``test_kinds`` (strings,
  ``"normal"`` for normal images) or ``test_labels`` (1 = anomaly, 0 = normal).

Scoring uses the model's own colour mode and size: image files are converted and resized
to them; arrays must already match (a wrong channel count or size is a clear error).

Outputs: the model directory (:func:`gananomaly.persistence.save`), a CSV or Parquet table
with one row per test file in the schema of ``gananomaly score`` (:func:`score_table`;
written to a temporary name and renamed into place), AUROC per defect kind when labels
are present, and an MLflow run (:func:`gananomaly.tracking.tracked_fit`) with a grid of
the most anomalous test images' heat-map overlays (:func:`top_anomaly_grid`).

Command line: ``gananomaly image fit|score|demo|throughput`` (see ``--help``); from Python:
:func:`fit_images`, :func:`score_images`, :func:`run_image_demo`, :func:`conv_throughput`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gananomaly._atomic import atomic_open

__all__ = [
    "ImageSet",
    "load_image_files",
    "load_image_source",
    "fit_images",
    "score_images",
    "score_table",
    "overlay_pixels",
    "write_map_overlays",
    "top_anomaly_grid",
    "auroc_per_kind",
    "run_image_demo",
    "conv_throughput",
    "register_cli",
    "IMAGE_SUFFIXES",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_MODES = {"grey": "L", "gray": "L", "rgb": "RGB"}


@dataclass
class ImageSet:
    """Images loaded for the pipeline.

    ``images`` is channel-first ``(n, C, H, W)`` float64 (pixel values 0..255 for files),
    ``names`` the file names (relative to the data folder) or ``"<array>[i]"``, ``kinds``
    ``"normal"``/defect kind per image (None when unlabelled), ``skipped`` the files that
    could not be read, with the reason.
    """

    images: np.ndarray
    names: list[str]
    kinds: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _mode(mode: str) -> str:
    try:
        return _MODES[mode.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"mode must be 'grey' or 'rgb', got {mode!r}") from None


def _size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return size


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_files(
    paths: list[Path],
    *,
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    root: Path | None = None,
) -> ImageSet:
    """Read image files with Pillow into one ``(n, C, H, W)`` array.

    Parameters
    ----------
    paths : list of path
    mode : {"grey", "rgb"}
        Colour conversion applied to every file (C = 1 or 3).
    size : int, (height, width) or None
        Resize every image to it (bilinear). None: the size of the first readable image;
        images of another size are resized to it with a warning.
    on_error : {"skip", "raise"}
        What to do with files Pillow cannot read: skip them with a warning naming each,
        or raise ``ValueError`` naming them all.
    root : path, optional
        Names are given relative to it.

    Returns
    -------
    ImageSet
    """
    from PIL import Image, UnidentifiedImageError

    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    pil_mode = _mode(mode)
    target = _size(size)
    arrays, names, skipped = [], [], []
    resized = 0
    for path in paths:
        name = str(path.relative_to(root)) if root is not None else str(path)
        try:
            with Image.open(path) as img:
                img.load()
                img = img.convert(pil_mode)
                if target is None:
                    target = (img.height, img.width)
                if (img.height, img.width) != target:
                    resized += 1
                    img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.float64)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            skipped.append((name, f"{type(exc).__name__}: {exc}"))
            continue
        arrays.append(arr[None] if arr.ndim == 2 else np.moveaxis(arr, 2, 0))
        names.append(name)
    if skipped:
        listing = "; ".join(f"{n} ({why})" for n, why in skipped)
        if on_error == "raise":
            raise ValueError(f"{len(skipped)} image file(s) could not be read: {listing}")
        log.warning("skipped %d unreadable image file(s): %s", len(skipped), listing)
    if resized and size is None:
        log.warning("%d image(s) had another size than %dx%d and were resized to it", resized, *target)
    if not arrays:
        raise ValueError("no readable images" + (f" (skipped: {', '.join(n for n, _ in skipped)})" if skipped else ""))
    return ImageSet(np.stack(arrays), names, None, skipped)


def _array_images(arr: np.ndarray, channels: str, prefix: str) -> ImageSet:
    from gananomaly.images import to_channels_first

    arr = np.asarray(arr)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{prefix}: image arrays must be (n, H, W), (n, C, H, W) or (n, H, W, C), got {arr.shape}")
    imgs = to_channels_first(arr.astype(np.float64), channels)
    return ImageSet(imgs, [f"{prefix}[{i}]" for i in range(len(imgs))])


def load_image_source(
    source: str | os.PathLike,
    *,
    split: str = "train",
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    channels: str = "auto",
) -> ImageSet | None:
    """Load one split (``"train"`` or ``"test"``) of a folder, ``.npy`` or ``.npz`` source.

    A folder without ``train/``/``test/`` subfolders is read whole as the requested split;
    ``.npy`` is the requested split. Returns None when the source has no such split.
    """
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"image source {str(src)!r} does not exist")
    if src.is_file():
        if src.suffix == ".npy":
            return _array_images(np.load(src, allow_pickle=False), channels, src.name)
        if src.suffix == ".npz":
            with np.load(src, allow_pickle=False) as z:
                if split not in z.files:
                    if split == "train":
                        raise ValueError(f"{str(src)!r} has no 'train' array (found {sorted(z.files)})")
                    return None
                out = _array_images(z[split], channels, f"{src.name}:{split}")
                if split == "test":
                    if "test_kinds" in z.files:
                        out.kinds = [str(k) for k in z["test_kinds"]]
                    elif "test_labels" in z.files:
                        out.kinds = ["anomaly" if int(v) else "normal" for v in z["test_labels"]]
                    if out.kinds is not None and len(out.kinds) != len(out.images):
                        raise ValueError(f"{str(src)!r}: {len(out.kinds)} test labels for {len(out.images)} images")
            return out
        raise ValueError(f"image source {str(src)!r} must be a folder, a .npy or a .npz file")
    sub = src / split
    if not sub.is_dir():
        if split == "train" and not (src / "test").is_dir():
            sub = src
        else:
            return None
    paths = _list_images(sub)
    if not paths:
        if split == "train":
            raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(sub)!r}")
        return None
    out = load_image_files(paths, mode=mode, size=size, on_error=on_error, root=src)
    if split == "test":
        kinds = []
        for name in out.names:
            parts = Path(name).parts  # ("test", kind, file) or ("test", file)
            kinds.append(parts[1] if len(parts) > 2 else "")
        out.kinds = kinds if all(kinds) else None
    return out


def auroc_per_kind(kinds: list[str], anomaly_score: np.ndarray) -> dict[str, float]:
    """AUROC of every defect kind against the normal images, and ``all`` (every kind together)."""
    from sklearn.metrics import roc_auc_score

    kinds_arr = np.asarray(kinds)
    normal = kinds_arr == "normal"
    out: dict[str, float] = {}
    if normal.sum() == 0 or normal.all():
        return out
    score = np.asarray(anomaly_score, dtype=np.float64)
    for kind in sorted(set(kinds) - {"normal"}):
        mask = normal | (kinds_arr == kind)
        out[kind] = float(roc_auc_score(kinds_arr[mask] != "normal", score[mask]))
    out["all"] = float(roc_auc_score(~normal, score))
    return out


def _table_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"parquet"`` from the output's name; refuses a missing directory before any work."""
    from gananomaly.pipelines.tabular import file_format

    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    return file_format(path)


def _write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV or Parquet (by the name's suffix), whole or not at all."""
    path = Path(path)
    if _table_format(path) == "parquet":
        with atomic_open(path, "wb") as fh:
            df.to_parquet(fh, index=False)
    else:
        with atomic_open(path, newline="") as fh:
            df.to_csv(fh, index=False)
    return path


def score_table(det, data: ImageSet) -> pd.DataFrame:
    """The per-image score table, the schema of ``gananomaly score`` for images: ``file``, then
    :func:`gananomaly.pipelines.batch_score.score_prepared`'s columns (``discriminator``,
    ``reconstruction``, ``latent``, ``knn``, ``combined``: higher = more anomalous; ``score`` =
    ``score_samples``, higher = more normal; ``label`` = ``predict``, +1/-1). One pass through
    the networks per image."""
    from gananomaly.pipelines.batch_score import score_prepared

    frame = score_prepared(det, data.images)
    frame.insert(0, "file", pd.Series(data.names, dtype=object))
    return frame


def _tracking_available() -> bool:
    return (Path(__file__).resolve().parent.parent / "gananomaly" / "tracking.py").is_file()


def fit_images(
    source: str | os.PathLike,
    model_dir: str | os.PathLike,
    *,
    mode: str = "grey",
    size: int | tuple[int, int] | None = None,
    on_error: str = "skip",
    channels: str = "auto",
    scores_csv: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    mlflow: bool = True,
    experiment: str = "gananomaly-images",
    run_name: str | None = None,
    tracking_uri: str | None = None,
    log_model: bool = True,
) -> dict[str, Any]:
    """Fit a detector on the normal images of ``source``, evaluate, log, save.

    Parameters
    ----------
    source : path
        Folder (``train/``, optional ``test/``), ``.npy`` (training images) or ``.npz``.
    model_dir : path
        Where the model is saved (replaced atomically).
    mode, size, on_error : see :func:`load_image_files`
    channels : {"auto", "first", "last"}
        Layout of array sources (see :class:`gananomaly.GANAnomalyDetector`).
    scores_csv : path, optional
        Per-file scores of the test images, the table of :func:`score_table` (the schema of
        ``gananomaly score``), CSV or Parquet by the suffix (``.csv``, ``.parquet``/``.pq``),
        written atomically. Needs test images.
    params : dict, optional
        :class:`gananomaly.GANAnomalyDetector` parameters (default ``random_state=0``).
    mlflow : bool, default=True
        Log the run with :func:`gananomaly.tracking.tracked_fit` (skipped when the
        tracking module is not installed), plus ``auroc_kind_<kind>`` metrics and, when there
        are test images, the artifacts ``anomaly_maps/top_anomalies.png`` (see
        :func:`top_anomaly_grid`) and ``anomaly_maps/top_anomalies.json`` (its tiles' files and
        scores, most anomalous first).
    experiment, run_name, tracking_uri : MLflow settings.
    log_model : bool, default=True
        Also log the model as an MLflow artifact (it is saved to ``model_dir`` either way).

    Returns
    -------
    dict with ``model`` (the fitted detector), ``model_dir``, ``run_id`` (None without
    MLflow), ``auroc`` (per defect kind and ``all``; empty without labels),
    ``scores`` (DataFrame or None), ``skipped`` (unreadable files), ``fit_seconds``.
    """
    from gananomaly import GANAnomalyDetector
    from gananomaly.persistence import save

    train = load_image_source(source, split="train", mode=mode, size=size, on_error=on_error, channels=channels)
    if size is None and Path(source).is_dir():
        size = tuple(train.images.shape[2:])  # test images are resized to the training size
    test = load_image_source(source, split="test", mode=mode, size=size, on_error=on_error, channels=channels)
    if scores_csv is not None:
        if test is None:
            raise ValueError(f"scores_csv={str(scores_csv)!r} needs test images in {str(source)!r}")
        _table_format(scores_csv)  # a bad name fails before the fit, not after
    kw = {"random_state": 0, **(params or {}), "channels": "first"}
    det = GANAnomalyDetector(**kw)
    labelled = test is not None and test.kinds is not None and len(set(test.kinds)) > 1 \
        and "normal" in test.kinds
    run_id = None
    start = time.perf_counter()
    if mlflow and _tracking_available():
        from gananomaly.tracking import tracked_fit

        y_eval = None
        if labelled:
            y_eval = (np.asarray(test.kinds) != "normal").astype(int)
        det, run_id = tracked_fit(
            det, train.images, X_eval=test.images if labelled else None, y_eval=y_eval,
            experiment=experiment, run_name=run_name, tracking_uri=tracking_uri,
            extra_params={"data.source": str(source), "data.mode": mode, "data.n_train": len(train.images),
                          "data.skipped": len(train.skipped) + (len(test.skipped) if test else 0)},
            image_shape=tuple(train.images.shape[1:]), log_model=log_model,
        )
    else:
        if mlflow:
            log.warning("gananomaly.tracking is not available: the image run is not logged to MLflow")
        det.fit(train.images)
    fit_seconds = time.perf_counter() - start
    save(det, model_dir)
    aurocs: dict[str, float] = {}
    scores = None
    if test is not None:
        scores = score_table(det, test)
        if labelled:
            aurocs = auroc_per_kind(test.kinds, scores["combined"].to_numpy())
        if scores_csv is not None:
            _write_table_atomic(scores, scores_csv)
        if run_id is not None:
            _log_run_outputs(run_id, tracking_uri, det, test, scores, aurocs)
    return {"model": det, "model_dir": Path(model_dir), "run_id": run_id, "auroc": aurocs, "scores": scores,
            "skipped": train.skipped + (test.skipped if test else []), "fit_seconds": fit_seconds}


def _log_run_outputs(run_id: str, tracking_uri: str | None, det, test: ImageSet, scores: pd.DataFrame,
                     aurocs: dict[str, float]) -> None:
    """Add to the finished run: ``auroc_kind_<kind>`` metrics and the grid of the most
    anomalous test images' overlays with its JSON index."""
    from mlflow import MlflowClient

    from gananomaly.tracking import resolve_tracking_uri

    # The fit and the model are done: a metric or a picture is not worth failing for.
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    try:
        for kind, value in aurocs.items():
            client.log_metric(run_id, f"auroc_kind_{kind}", value)
    except Exception as exc:
        log.warning("could not log per-kind AUROC to MLflow run %s: %s", run_id, exc)
    try:
        grid, tiles = top_anomaly_grid(det, test, scores["score"].to_numpy())
        client.log_image(run_id, grid, "anomaly_maps/top_anomalies.png")
        client.log_dict(run_id, {"tiles": tiles, "tile_shape": list(grid_tile_shape(test.images.shape[2:])),
                                 "gap": GRID_GAP}, "anomaly_maps/top_anomalies.json")
    except Exception as exc:
        log.warning("could not log the anomaly-map grid to MLflow run %s: %s", run_id, exc)


def score_images(
    model_dir: str | os.PathLike,
    source: str | os.PathLike,
    out_csv: str | os.PathLike | None = None,
    *,
    on_error: str = "skip",
    channels: str = "auto",
    maps_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Score image files or arrays with a saved model; optionally write the per-file table and,
    with ``maps_dir``, one heat-map overlay PNG per image (see :func:`write_map_overlays`).

    Image files are converted to the model's colour mode (C = 1: grey, 3: RGB) and resized
    to its image size. Array sources (``.npy``; the ``test`` array of an ``.npz``) must
    already have the model's channels and size. A folder with a ``test/`` subfolder is
    scored on ``test/``; any other folder whole.

    Returns
    -------
    DataFrame
        :func:`score_table`: the columns of ``gananomaly score`` for images, in its order.
        ``out_csv`` gets the same table, CSV or Parquet by its suffix, written atomically.
    """
    return _score_images(model_dir, source, out_csv, on_error=on_error, channels=channels, maps_dir=maps_dir)[0]


def _score_images(model_dir, source, out_csv, *, on_error: str, channels: str,
                  maps_dir) -> tuple[pd.DataFrame, ImageSet]:
    """:func:`score_images`, also returning the images it read (with their labels, if any)."""
    import gananomaly

    if out_csv is not None:
        _table_format(out_csv)
    det = gananomaly.load(model_dir)
    shape = getattr(det, "image_shape_", None)
    if shape is None:
        raise ValueError(f"the model at {str(model_dir)!r} was not fitted on images")
    mode = "grey" if shape[0] == 1 else "rgb"
    src = Path(source)
    if src.is_dir() and (src / "test").is_dir():
        data = load_image_source(src, split="test", mode=mode, size=shape[1:], on_error=on_error)
    elif src.is_dir():
        data = load_image_files(_list_images(src), mode=mode, size=shape[1:], on_error=on_error, root=src)
    else:
        data = load_image_source(src, split="test" if src.suffix == ".npz" else "train", channels=channels)
    if data is None:
        raise ValueError(f"no images to score in {str(src)!r}")
    frame = score_table(det, data)
    if maps_dir is not None:
        write_map_overlays(det, data, maps_dir)
    if out_csv is not None:
        _write_table_atomic(frame, out_csv)
    return frame, data


# Map values (in units of a typical training pixel's reconstruction residual) at which the
# overlay is fully red.
OVERLAY_SATURATION = 10.0


def overlay_pixels(images: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``(n, H, W, 3)`` RGB in [0, 1]: each image ``(n, C, H, W)`` in grey (stretched to its own
    range) with its anomaly map ``(n, H, W)`` laid over it in red. The map keeps its scale
    across images (1 = a typical training pixel; red saturates at :data:`OVERLAY_SATURATION`),
    so a brighter overlay means a more anomalous region."""
    grey = images.mean(axis=1)
    lo = grey.reshape(len(grey), -1).min(1)[:, None, None]
    hi = grey.reshape(len(grey), -1).max(1)[:, None, None]
    grey = (grey - lo) / np.maximum(hi - lo, 1e-12)
    alpha = 0.7 * np.clip(maps / OVERLAY_SATURATION, 0.0, 1.0)
    return np.stack([grey * (1 - alpha) + alpha, grey * (1 - alpha), grey * (1 - alpha)], axis=-1)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (255 * pixels).round().astype(np.uint8)


def write_map_overlays(det, data: ImageSet, maps_dir: str | os.PathLike, *, batch: int = 256) -> list[Path]:
    """Write, per image, ``<maps_dir>/<name>.png``: :func:`overlay_pixels` of the image and its
    anomaly map (:meth:`GANAnomalyDetector.anomaly_map`), at the image's size. Each file is
    written atomically; images are mapped ``batch`` at a time."""
    from PIL import Image

    root = Path(maps_dir)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(data.names), batch):
        images = data.images[start : start + batch]
        rgb = overlay_pixels(images, det.anomaly_map(images))
        for name, pixels in zip(data.names[start : start + batch], rgb):
            safe = re.sub(r"[^\w./-]", "_", name).lstrip("/").replace("..", "_")
            path = (root / safe).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                Image.fromarray(_to_uint8(pixels), mode="RGB").save(fh, format="PNG")
            written.append(path)
    return written


#: Most tiles in :func:`top_anomaly_grid`; tiles are enlarged (nearest neighbour, by a whole
#: factor) until their longer side reaches :data:`GRID_TILE_MIN` pixels, and :data:`GRID_GAP`
#: black pixels separate them.
GRID_MAX_TILES = 16
GRID_TILE_MIN = 64
GRID_GAP = 2


def grid_tile_shape(hw: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of one tile of :func:`top_anomaly_grid` for images of size ``hw``."""
    factor = max(1, -(-GRID_TILE_MIN // max(hw)))
    return int(hw[0]) * factor, int(hw[1]) * factor


def top_anomaly_grid(det, data: ImageSet, score: np.ndarray, *, n: int = GRID_MAX_TILES
                     ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The overlays (:func:`overlay_pixels`) of the ``n`` most anomalous images, tiled in a grid.

    Parameters
    ----------
    det : fitted detector with ``anomaly_map``
    data : ImageSet
    score : ndarray of shape (n_images,)
        ``score_samples`` of ``data.images`` (higher = more normal); the lowest come first.
    n : int, default=16

    Returns
    -------
    grid : ndarray of uint8, shape (rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3)
        ``cols = ceil(sqrt(k))`` and ``rows = ceil(k / cols)`` for ``k = min(n, n_images)``
        tiles, each of :func:`grid_tile_shape`, filled row by row, most anomalous first.
    tiles : list of dict
        Per tile, in that order: ``file``, ``score``, ``row``, ``col``.
    """
    order = np.argsort(score, kind="stable")[: max(0, min(int(n), len(score)))]
    k = len(order)
    if k == 0:
        raise ValueError("no images to tile")
    images = data.images[order]
    rgb = _to_uint8(overlay_pixels(images, det.anomaly_map(images)))
    th, tw = grid_tile_shape(images.shape[2:])
    factor = th // images.shape[2]
    cols = int(np.ceil(np.sqrt(k)))
    rows = -(-k // cols)
    grid = np.zeros((rows * th + (rows - 1) * GRID_GAP, cols * tw + (cols - 1) * GRID_GAP, 3), dtype=np.uint8)
    tiles = []
    for i, (idx, pixels) in enumerate(zip(order, rgb)):
        r, c = divmod(i, cols)
        y, x = r * (th + GRID_GAP), c * (tw + GRID_GAP)
        grid[y : y + th, x : x + tw] = pixels.repeat(factor, axis=0).repeat(factor, axis=1)
        tiles.append({"file": data.names[idx], "score": float(score[idx]), "row": r, "col": c})
    return grid, tiles


# ---------------------------------------------------------------------------------- demo
def run_image_demo(
    task: str = "digits",
    *,
    digits: tuple[int, ...] | list[int] | None = None,
    epochs: int | str = "auto",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """AUROC of the detector next to IsolationForest on the raw pixels, measured in the same run.

    Parameters
    ----------
    task : {"digits", "texture"}
        ``"digits"``: scikit-learn's 8x8 digits, one-class protocol (each digit in
        ``digits`` normal in turn, every other digit anomalous); one row per digit plus
        ``mean``. ``"texture"``: grey 32x32 photograph patches with planted defects; one
        row per defect kind plus ``all``.
    digits : sequence of int, optional
        Default: 0..9.
    epochs : int or "auto"
    seed : int
        Seeds the detector, IsolationForest and the data split.
    params : dict, optional
        More detector parameters.
    verbose : bool
        Print each row as it is measured and the final table.

    Returns
    -------
    DataFrame with columns ``gan_combined``, ``gan_reconstruction``, ``gan_discriminator``,
    ``iforest`` (AUROCs) and ``fit_seconds``.
    """
    from gananomaly.pipelines.image_data import digits_one_class, texture_defects
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from gananomaly import GANAnomalyDetector

    def detector():
        return GANAnomalyDetector(epochs=epochs, random_state=seed, **(params or {}))

    def row(det, iforest, X_test, y, fit_s):
        comps = det.score_components(X_test)
        flat = X_test.reshape(len(X_test), -1)
        return {"gan_combined": roc_auc_score(y, comps["combined"]),
                "gan_reconstruction": roc_auc_score(y, comps["reconstruction"]),
                "gan_discriminator": roc_auc_score(y, comps["discriminator"]),
                "iforest": roc_auc_score(y, -iforest.score_samples(flat)),
                "fit_seconds": fit_s}

    rows: dict[str, dict[str, float]] = {}
    if task == "digits":
        for digit in (range(10) if digits is None else digits):
            X_train, X_test, y_test = digits_one_class(int(digit), seed=seed)
            start = time.perf_counter()
            det = detector().fit(X_train)
            fit_s = time.perf_counter() - start
            iforest = IsolationForest(random_state=seed).fit(X_train.reshape(len(X_train), -1))
            name = f"digit {int(digit)}"
            rows[name] = row(det, iforest, X_test, y_test, fit_s)
            if verbose:
                print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name].items()), flush=True)
        table = pd.DataFrame(rows).T
        table.loc["mean"] = table.mean()
    elif task == "texture":
        X_train, X_test, kinds = texture_defects(seed=seed)
        start = time.perf_counter()
        det = detector().fit(X_train)
        fit_s = time.perf_counter() - start
        iforest = IsolationForest(random_state=seed).fit(X_train.reshape(len(X_train), -1))
        normal = kinds == "normal"
        for kind in [*sorted(set(kinds) - {"normal"}), "all"]:
            mask = np.ones(len(kinds), bool) if kind == "all" else (normal | (kinds == kind))
            rows[kind] = row(det, iforest, X_test[mask], (~normal[mask]).astype(int), fit_s)
        table = pd.DataFrame(rows).T
    else:
        raise ValueError(f"task must be 'digits' or 'texture', got {task!r}")
    if verbose:
        print(table.round(3).to_string())
    return table


def conv_throughput(
    sizes: tuple[int, ...] = (32, 64),
    *,
    channels: int = 3,
    n_images: int = 1024,
    device: str = "auto",
    precision: str = "auto",
    repeats: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Scoring and training speed of the convolutional detector, in images per second.

    For each side in ``sizes`` a detector is fitted for one GAN epoch and one encoder epoch
    on ``n_images`` random images (``train_images_per_s`` counts images through both
    phases), then the median over ``repeats`` of scoring the same images gives
    ``score_images_per_s``. Speed does not depend on what the weights learned.

    Returns
    -------
    DataFrame indexed by size with ``train_images_per_s``, ``score_images_per_s``,
    ``device`` and ``precision``.
    """
    from gananomaly import GANAnomalyDetector

    rng = np.random.RandomState(seed)
    rows = {}
    for size in sizes:
        X = rng.rand(n_images, channels, size, size).astype(np.float32)
        det = GANAnomalyDetector(epochs=1, encoder_epochs=1, batch_size=128, device=device, precision=precision,
                                 random_state=seed)
        start = time.perf_counter()
        with warnings.catch_warnings():  # one epoch on noise: a collapse warning says nothing here
            warnings.simplefilter("ignore")
            det.fit(X)
        train_s = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            det.score_samples(X)
            times.append(time.perf_counter() - start)
        amp = det.score_config_.amp_dtype
        rows[f"{size}x{size}"] = {"train_images_per_s": 2 * n_images / train_s,
                                  "score_images_per_s": n_images / float(np.median(times)),
                                  "device": str(det.device_), "precision": "fp32" if amp is None else str(amp)}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------- CLI
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
        params[key] = tuple(value) if isinstance(value, list) else value
    if epochs is not None:
        params["epochs"] = epochs if epochs == "auto" else int(epochs)
    return params


def _cli_fit(args: argparse.Namespace) -> int:
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
    frame, data = _score_images(args.model_dir, args.data, args.out, on_error=args.on_error, channels=args.channels,
                                maps_dir=args.maps)
    print(f"scored {len(frame)} images; {int((frame['label'] == -1).sum())} flagged as outliers"
          + (f"; scores written to {args.out}" if args.out else ""))
    if args.out is None:
        print(frame.to_string(index=False))
    if data.kinds is not None:
        for kind, value in auroc_per_kind(data.kinds, frame["combined"].to_numpy()).items():
            print(f"AUROC {kind}: {value:.4f}")
    return 0


def _cli_demo(args: argparse.Namespace) -> int:
    epochs = args.epochs if args.epochs == "auto" else int(args.epochs)
    run_image_demo(args.task, digits=args.digits, epochs=epochs, seed=args.seed)
    return 0


def _cli_throughput(args: argparse.Namespace) -> int:
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
    fit.add_argument("--epochs", default=None, help="GAN epochs (default: auto)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="detector parameter (JSON value), e.g. --param latent_dim=32; repeatable")
    fit.add_argument("--no-mlflow", action="store_true", help="do not log the run to MLflow")
    fit.add_argument("--experiment", default="gananomaly-images")
    fit.add_argument("--run-name", default=None)
    fit.add_argument("--tracking-uri", default=None)
    common(fit)
    fit.set_defaults(func=_cli_fit)

    score = sub.add_parser("score", help="score images with a saved model; per-file table")
    score.add_argument("model_dir")
    score.add_argument("data", help="folder of images (its test/ subfolder if present), .npy or .npz")
    score.add_argument("--out", default=None, help=".csv or .parquet file to write (default: print the table)")
    score.add_argument("--maps", default=None, metavar="DIR",
                       help="write one heat-map overlay PNG per image into DIR (anomaly map in red)")
    common(score)
    score.set_defaults(func=_cli_score)

    demo = sub.add_parser("demo", help="built-in data: AUROC next to IsolationForest on raw pixels")
    demo.add_argument("--task", choices=("digits", "texture"), default="digits")
    demo.add_argument("--digits", type=int, nargs="+", default=None, help="normal digits to try (default 0..9)")
    demo.add_argument("--epochs", default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cli_demo)

    thr = sub.add_parser("throughput", help="images/s of the conv detector (training and scoring)")
    thr.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    thr.add_argument("--channels-count", type=int, choices=(1, 3), default=3)
    thr.add_argument("--n-images", type=int, default=1024)
    thr.add_argument("--device", default="auto")
    thr.set_defaults(func=_cli_throughput)


if __name__ == "__main__":  # pragma: no cover
    import sys

    from gananomaly.pipelines.cli import main

    sys.exit(main(["image", *sys.argv[1:]]))
