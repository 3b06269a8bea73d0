"""Scoring images: the per-file score table, anomaly-map overlays, the grid of the most anomalous
images and AUROC per defect kind (part of the image job, :mod:`gananomaly.pipelines.image`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gananomaly.pipelines import image_files
from gananomaly.pipelines.batch_files import CSV_WRITERS, check_output, output_compression
from gananomaly.pipelines.frame_scoring import score_prepared
from gananomaly.pipelines.image_files import ImageSet, list_images, load_image_files, load_image_source

from gananomaly._atomic import atomic_open

__all__ = ["GRID_GAP", "GRID_MAX_TILES", "GRID_TILE_MIN", "OVERLAY_SATURATION", "auroc_per_kind", "grid_tile_shape",
           "overlay_paths", "overlay_pixels", "score_images", "score_images_and_data", "score_table", "table_format",
           "top_anomaly_grid", "write_map_overlays", "write_table_atomic"]


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


def table_format(path: str | os.PathLike, option: str = "--out") -> str:
    """``"csv"`` or ``"parquet"`` from the output's name, by the rules of ``gananomaly score
    --output`` (:func:`~gananomaly.pipelines.batch_files.check_output`: refused before any work)."""
    return check_output(Path(path), option=option)[0]


def write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV or Parquet (by the name's suffix; a ``.csv.gz``, ``.csv.bz2`` or
    ``.csv.xz`` compressed as it says), whole or not at all."""
    path = Path(path)
    if table_format(path) == "parquet":
        with atomic_open(path, "wb") as fh:
            df.to_parquet(fh, index=False)
    elif (compression := output_compression(path)) is not None:
        # the compressor writes into the temporary file and leaves closing it to atomic_open
        with atomic_open(path, "wb") as raw, CSV_WRITERS[compression](raw, "wt", encoding="utf-8", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        with atomic_open(path, newline="") as fh:
            df.to_csv(fh, index=False)
    return path


def score_table(det, data: ImageSet) -> pd.DataFrame:
    """The per-image score table, the schema of ``gananomaly score`` for images: ``file``, then
    :func:`gananomaly.pipelines.frame_scoring.score_prepared`'s columns (``discriminator``,
    ``reconstruction``, ``latent``, ``knn``, ``combined``: higher = more anomalous; ``score`` =
    ``score_samples``, higher = more normal; ``label`` = ``predict``, +1/-1). One pass through
    the networks per image."""
    frame = score_prepared(det, data.images)
    frame.insert(0, "file", pd.Series(data.names, dtype=object))
    return frame


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
    return score_images_and_data(model_dir, source, out_csv, on_error=on_error, channels=channels, maps_dir=maps_dir)[0]


def score_images_and_data(model_dir, source, out_csv, *, on_error: str, channels: str,
                  maps_dir) -> tuple[pd.DataFrame, ImageSet]:
    """:func:`score_images`, also returning the images it read (with their labels, if any)."""
    import gananomaly

    if out_csv is not None:
        table_format(out_csv)
    if ":/" in str(model_dir) or (Path(model_dir) / "MLmodel").is_file():  # an MLflow model, as `score` takes
        from gananomaly.pipelines.model_loading import load_model

        det = load_model(model_dir)[0]
    else:
        det = gananomaly.load(model_dir)
    if hasattr(det, "detectors_"):  # a Laplacian pyramid: its own scores, no score table
        raise ValueError(f"the model at {str(model_dir)!r} is a Laplacian-pyramid model, which the image jobs do "
                         "not score; score it in Python: gananomaly.load(path).score_samples(images)")
    shape = getattr(det, "image_shape_", None)
    if shape is None:
        raise ValueError(f"the model at {str(model_dir)!r} was not fitted on images")
    mode = "grey" if shape[0] == 1 else "rgb"
    src = Path(source)
    if src.is_dir() and (src / "test").is_dir():
        data = load_image_source(src, split="test", mode=mode, size=shape[1:], on_error=on_error)
    elif src.is_dir():
        data = load_image_files(list_images(src), mode=mode, size=shape[1:], on_error=on_error, root=src)
    else:
        data = load_image_source(src, split="test" if src.suffix.lower() == ".npz" else "train", channels=channels)
    if data is None:
        raise ValueError(f"no images to score in {str(src)!r}{image_files.npz_keys_hint(src)}")
    if maps_dir is not None:
        inputs = [src] if src.is_file() else list_images(image_files.scoring_folder(src))
        overlay_paths(data.names, maps_dir, inputs=inputs)  # refuse a clash before the scoring pass
        if src.is_dir():
            scored = Path(os.path.realpath(image_files.scoring_folder(src)))
            target = Path(os.path.realpath(maps_dir))
            if target == scored or scored in target.parents:
                raise ValueError(f"--maps {str(maps_dir)!r} is inside the folder being scored ({str(scored)!r}): "
                                 "its overlays would be scored as images the next time; write the maps to another "
                                 "folder")
    frame = score_table(det, data)
    if maps_dir is not None:
        write_map_overlays(det, data, maps_dir, inputs=inputs)
    if out_csv is not None:
        write_table_atomic(frame, out_csv)
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


def overlay_paths(names: list[str], maps_dir: str | os.PathLike, *,
                  inputs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The overlay file of each image name under ``maps_dir``: the name (folders kept, any
    character other than a letter, digit, ``_``, ``.``, ``-`` or ``/`` made ``_``) with ``.png``
    appended, so ``a.jpg`` -> ``a.jpg.png`` and ``x.npy[3]`` -> ``x.npy_3_.png``. Names that
    clash after that (ignoring case) keep the first image's file; each later one gets ``_<k>``
    (the smallest k free) before ``.png``. Raises ValueError, writing nothing, when an overlay
    would replace one of ``inputs`` (the files scored)."""
    cleaned = [re.sub(r"[^\w./-]", "_", name).lstrip("/").replace("..", "_") or "_" for name in names]
    taken = {c.casefold() + ".png" for c in cleaned}
    # folders the overlays need: a file of that name would block them ("x.png" -> "x.png.png",
    # next to a folder "x.png.png/" holding "y.png")
    folders = {str(parent).casefold() for c in cleaned for parent in Path(c).parents if str(parent) != "."}
    used: set[str] = set()
    rel = []
    for c in cleaned:
        cand = c + ".png"
        k = 0
        while cand.casefold() in used or cand.casefold() in folders or (k and cand.casefold() in taken):
            k += 1
            cand = f"{c}_{k}.png"
        used.add(cand.casefold())
        rel.append(cand)
    root = Path(maps_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--maps {str(root)!r} is a file, not a folder")
    paths = [root / r for r in rel]
    protected = {os.path.realpath(p) for p in inputs}
    for name, path in zip(names, paths):
        if os.path.realpath(path) in protected:
            raise ValueError(f"--maps {str(root)!r}: the overlay of {name!r} would replace the input file "
                             f"{str(path)!r}; write the maps to another folder")
    return paths


def write_map_overlays(det, data: ImageSet, maps_dir: str | os.PathLike, *, batch: int = 256,
                       inputs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Write, per image, its :func:`overlay_paths` file under ``maps_dir``: :func:`overlay_pixels`
    of the image and its anomaly map (:meth:`GANAnomalyDetector.anomaly_map`), at the size the
    model scored the image at (files are resized to the model's size when they are read).
    Refuses (ValueError, nothing written) an overlay that would replace one of ``inputs``.
    Each file is written atomically; images are mapped ``batch`` at a time."""
    from PIL import Image

    paths = overlay_paths(data.names, maps_dir, inputs=inputs)
    Path(maps_dir).mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch):
        images = data.images[start : start + batch]
        rgb = overlay_pixels(images, det.anomaly_map(images))
        for path, pixels in zip(paths[start : start + batch], rgb):
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                Image.fromarray(_to_uint8(pixels), mode="RGB").save(fh, format="PNG")
    return paths


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
