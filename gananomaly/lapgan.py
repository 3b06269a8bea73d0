"""Multi-scale image scoring with a Laplacian pyramid of GANs (coarse to fine, as LAPGAN).

An image ``I`` of side ``S`` (a power of two) is decomposed into a Gaussian pyramid
``G_0 = I, G_{k+1} = down(G_k)`` and its Laplacian bands ``h_k = G_k - up(G_{k+1})``. The
coarsest level ``G_L`` gets an unconditional GAN; every finer level ``k`` gets a GAN that
generates the band ``h_k`` *conditioned on the upsampled coarser image* ``up(G_{k+1})``.
Each level is scored by its own detector, so a defect shows up at the scale where it lives:
wrong coarse structure at the coarse levels, wrong fine texture at the fine ones.
:meth:`LaplacianPyramidDetector.anomaly_map` shows where, level by level or combined.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from gananomaly._atomic import fitted_state_kept
from gananomaly.estimator import GANAnomalyDetector
from gananomaly.images import resize
from gananomaly.scoring import threshold_at

__all__ = ["LaplacianPyramidDetector", "laplacian_pyramid"]

_MAP_COMPONENTS = ("combined", "reconstruction", "discriminator")


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``[(band, condition), ...]`` from fine to coarse: for level ``k < levels - 1`` the band
    ``h_k`` and its condition ``up(G_{k+1})``; the last entry is ``(G_L, None)``.

    ``images``: ``(n, C, S, S)`` with ``S`` divisible by ``2 ** (levels - 1)``.
    """
    g = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for _ in range(levels - 1):
        coarse = _down(g)
        cond = _up(coarse)
        out.append(((g - cond).numpy(), cond.numpy()))
        g = coarse
    out.append((g.numpy(), None))
    return out


def _as_images(X: Any) -> np.ndarray:
    arr = np.asarray(X)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"images must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (n, H, W) or (n, C, H, W) with C in (1, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("no images (0 samples)")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("images contain NaN or infinity")
    return arr


class LaplacianPyramidDetector(OutlierMixin, BaseEstimator):
    """A GAN anomaly detector per Laplacian-pyramid level, fine levels conditioned on the
    coarser image.

    Parameters
    ----------
    levels : int, default=3
        Pyramid levels (the coarsest image has side ``size / 2 ** (levels - 1)``).
    size : int or None, default=None
        Side the images are resized to (a multiple of ``2 ** (levels - 1)``); None keeps
        square inputs whose side qualifies.
    epochs, latent_dim, hidden_dims, batch_size, weight :
        Passed to each level's :class:`GANAnomalyDetector`.
    contamination : "auto" or float in (0, 0.5], default="auto"
    random_state : int, RandomState or None, default=None

    Attributes
    ----------
    detectors_ : list of GANAnomalyDetector, fine to coarse
    level_stats_ : list of (median, IQR) of each level's training score
    level_map_stats_ : list of dict, component -> (median, IQR) of each level's training map
        pixels (see :meth:`anomaly_map`)
    offset_ : float
    """

    def __init__(self, *, levels: int = 3, size: int | None = None, epochs: Any = 30, latent_dim: int | None = None,
                 hidden_dims: tuple[int, ...] | None = None, batch_size: int = 64, weight: float = 0.1,
                 contamination: Any = "auto", device: str = "auto", random_state: Any = None):
        self.levels = levels
        self.size = size
        self.epochs = epochs
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.batch_size = batch_size
        self.weight = weight
        self.contamination = contamination
        self.device = device
        self.random_state = random_state

    def _resize(self, X: np.ndarray) -> np.ndarray:
        side = self.size if self.size is not None else X.shape[2]
        if X.shape[2:] != (side, side):
            if self.size is None:
                raise ValueError(f"images of shape {X.shape[2:]} are not square: set size=")
            t = torch.from_numpy(X.astype(np.float32))
            X = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False).numpy().astype(np.float64)
        return X

    def fit(self, X, y=None):
        """Fit one detector per pyramid level on normal images ``X``.

        Parameters are checked before any training; a fit that fails leaves the detector as
        it was (a refit keeps the previous model, a first fit leaves it unfitted)."""
        if isinstance(self.levels, bool) or not isinstance(self.levels, Integral) or self.levels < 1:
            raise ValueError(f"levels must be an int >= 1, got {self.levels!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, Integral)
                                      or self.size < max(2, 2 ** (self.levels - 1))):
            raise ValueError(f"size must be None or an int >= {max(2, 2 ** (self.levels - 1))} (2**(levels-1) and "
                             f"at least 2), got {self.size!r}")
        if self.contamination != "auto" and not (isinstance(self.contamination, Real)
                                                 and not isinstance(self.contamination, bool)
                                                 and 0 < self.contamination <= 0.5):
            raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5], got {self.contamination!r}")
        with fitted_state_kept(self):
            return self._fit(X)

    def _fit(self, X):
        X = self._resize(_as_images(X))
        side = X.shape[2]
        if side % (2 ** (self.levels - 1)):
            raise ValueError(f"image side {side} is not divisible by 2**(levels-1) = {2 ** (self.levels - 1)}")
        if X.shape[0] < 2:
            raise ValueError("need at least 2 images to fit")
        self.image_shape_ = X.shape[1:]
        rng = check_random_state(self.random_state)
        self.detectors_ = []
        for band, cond in laplacian_pyramid(X, self.levels):
            det = GANAnomalyDetector(
                epochs=self.epochs, latent_dim=self.latent_dim, hidden_dims=self.hidden_dims,
                batch_size=self.batch_size, weight=self.weight, device=self.device, network="mlp",
                random_state=int(rng.randint(np.iinfo(np.int32).max)),
            )
            flat = band.reshape(len(band), -1)
            det.fit(flat, context=None if cond is None else cond.reshape(len(cond), -1))
            self.detectors_.append(det)
        per_level = self._level_scores(X)
        self.level_stats_ = []
        for col in per_level.T:
            q25, q50, q75 = np.percentile(col, [25, 50, 75])
            self.level_stats_.append((float(q50), float(max(q75 - q25, 1e-12))))
        self.level_map_stats_ = self._map_stats(X, rng)
        train = self._combine(per_level)
        self.offset_ = threshold_at(-train, self.contamination)
        return self

    def _level_scores(self, X: np.ndarray) -> np.ndarray:
        cols = []
        for det, (band, cond) in zip(self.detectors_, laplacian_pyramid(X, self.levels)):
            flat = band.reshape(len(band), -1)
            ctx = None if cond is None else cond.reshape(len(cond), -1)
            cols.append(det.score_components(flat, context=ctx)["combined"].to_numpy())
        return np.stack(cols, axis=1)

    # Pixels' map statistics come from at most this many training images: enough for a
    # median and an IQR, and fitting does not grow by a map pass over a large training set.
    _MAP_STATS_IMAGES = 256

    def _map_stats(self, X: np.ndarray, rng: np.random.RandomState) -> list[dict[str, tuple[float, float]]]:
        """Per level and map component, the (median, IQR) of the training maps' pixels."""
        if len(X) > self._MAP_STATS_IMAGES:
            X = X[np.sort(rng.choice(len(X), self._MAP_STATS_IMAGES, replace=False))]
        stats: list[dict[str, tuple[float, float]]] = [{} for _ in self.detectors_]
        for component in _MAP_COMPONENTS:
            for k, level_map in enumerate(self._raw_level_maps(X, component)):
                q25, q50, q75 = np.percentile(level_map, [25, 50, 75])
                stats[k][component] = (float(q50), float(max(q75 - q25, 1e-12)))
        return stats

    def _raw_level_maps(self, X: np.ndarray, component: str) -> list[np.ndarray]:
        """Each level detector's own map of its band, ``(n, side_k, side_k)`` (mean over channels)."""
        maps = []
        for det, (band, cond) in zip(self.detectors_, laplacian_pyramid(X, self.levels)):
            flat = band.reshape(len(band), -1)
            ctx = None if cond is None else cond.reshape(len(cond), -1)
            maps.append(det.anomaly_map(flat, context=ctx, component=component).reshape(band.shape).mean(axis=1))
        return maps

    def _combine(self, per_level: np.ndarray) -> np.ndarray:
        z = [(per_level[:, k] - loc) / scale for k, (loc, scale) in enumerate(self.level_stats_)]
        return np.mean(z, axis=0)

    def _check(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._resize(_as_images(X))
        if X.shape[1:] != tuple(self.image_shape_):
            raise ValueError(f"images must have shape (C, H, W) = {tuple(self.image_shape_)} after resizing, "
                             f"got {X.shape[1:]}")
        return X

    def score_components(self, X) -> pd.DataFrame:
        """Anomaly score per level (``level_0`` = finest band ... ``level_{L}`` = coarsest
        image, each standardised on the training data) and their mean ``combined``; higher
        = more anomalous."""
        per_level = self._level_scores(self._check(X))
        z = {f"level_{k}": (per_level[:, k] - loc) / scale for k, (loc, scale) in enumerate(self.level_stats_)}
        df = pd.DataFrame(z)
        df["combined"] = df.mean(axis=1)
        return df

    def anomaly_map(self, X, component: str = "combined", per_level: bool = False):
        """Where each image is anomalous, level by level of the pyramid.

        Each level detector maps its own band (:meth:`GANAnomalyDetector.anomaly_map` with
        that ``component``, mean over channels), and the map is standardised as the level
        scores are: minus the median and divided by the IQR of the level's training map
        pixels, so 0 is a typical training pixel at every level and 1 one training IQR above.

        Parameters
        ----------
        X : array-like of shape (n, H, W) or (n, C, H, W)
        component : {"combined", "reconstruction", "discriminator"}, default="combined"
        per_level : bool, default=False
            False: one map per image at the input's size ``(n, H, W)``: every level's
            standardised map resized (bilinear) to ``(H, W)``, then their mean (as the
            ``combined`` score is the mean of the standardised level scores).
            True: a list with one array per level, fine to coarse as ``detectors_``
            (``level_0`` = finest band ... last = coarsest image), each
            ``(n, side_k, side_k)`` at that level's own resolution
            (``side_k = side / 2 ** k``, ``side`` the image side after resizing to ``size``).

        Returns
        -------
        ndarray of shape (n, H, W), or list of ndarray when ``per_level=True``
        """
        if component not in _MAP_COMPONENTS:
            raise ValueError(f"component must be one of {_MAP_COMPONENTS}, got {component!r}")
        check_is_fitted(self)
        if not hasattr(self, "level_map_stats_"):
            raise ValueError("this detector was fitted without map statistics: fit it again to get anomaly maps")
        original = _as_images(X).shape[2:]
        X = self._check(X)
        maps = [(m - self.level_map_stats_[k][component][0]) / self.level_map_stats_[k][component][1]
                for k, m in enumerate(self._raw_level_maps(X, component))]
        if per_level:
            return maps
        return np.mean([resize(m[:, None], original)[:, 0] for m in maps], axis=0)

    def score_samples(self, X) -> np.ndarray:
        return -self.score_components(X)["combined"].to_numpy()

    def decision_function(self, X) -> np.ndarray:
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1)
