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

Command line: ``gananomaly image fit|score|demo|throughput`` (see ``--help``; also
``python -m gananomaly.pipelines.image fit|...``); from Python: :func:`fit_images`,
:func:`score_images`, :func:`run_image_demo`, :func:`conv_throughput`.

The job's parts, each importable from here: :mod:`~gananomaly.pipelines.image_files` (loading),
:mod:`~gananomaly.pipelines.image_scoring` (score tables, maps, overlays, the anomaly grid),
:mod:`~gananomaly.pipelines.image_fit` (fit, demo, throughput), :mod:`~gananomaly.pipelines.image_cli`
(the command line).
"""

from __future__ import annotations

import sys

from gananomaly.pipelines.image_files import (
    IMAGE_SUFFIXES,
    ImageSet,
    list_images,
    load_image_files,
    load_image_source,
)
from gananomaly.pipelines.image_fit import conv_throughput, fit_images, run_image_demo
from gananomaly.pipelines.image_scoring import (
    GRID_GAP,
    GRID_MAX_TILES,
    GRID_TILE_MIN,
    OVERLAY_SATURATION,
    auroc_per_kind,
    grid_tile_shape,
    overlay_pixels,
    score_images,
    score_table,
    top_anomaly_grid,
    write_map_overlays,
)

__all__ = [
    "ImageSet",
    "load_image_files",
    "load_image_source",
    "list_images",
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
    "main",
    "IMAGE_SUFFIXES",
    "GRID_GAP",
    "GRID_MAX_TILES",
    "GRID_TILE_MIN",
    "OVERLAY_SATURATION",
    "grid_tile_shape",
]

from gananomaly.pipelines.image_cli import main, register_cli  # noqa: E402 - the command, kept light

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
