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

import json
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from gananomaly._atomic import fitted_state_kept, write_bytes
from gananomaly._version import __version__
from gananomaly.estimator import GANAnomalyDetector
from gananomaly.images import resize
from gananomaly.model_dir import atomic_dir
from gananomaly.model_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LAPGAN_CONFIG,
    LEVELS_DIGEST_KEY,
    MAX_PYRAMID_LEVELS,
    with_record_digest,
    with_tuples,
)
from gananomaly.scoring import threshold_at

__all__ = ["LaplacianPyramidDetector", "laplacian_pyramid", "MAX_LEVELS"]

_MAP_COMPONENTS = ("combined", "reconstruction", "discriminator")
# Adam's settings of every level's G and D (see _fit).
LEVEL_LEARNING_RATE, LEVEL_BETAS = 2e-4, (0.5, 0.999)
# The training scores kept for the threshold (and saved with the model) are at most this many.
TRAIN_SCORES_KEPT = 10_000
MAX_LEVELS = MAX_PYRAMID_LEVELS  # most pyramid levels (the coarsest image then has side S / 128)


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``[(band, condition), ...]`` from fine to coarse: for level ``k < levels - 1`` the band
    ``h_k`` and its condition ``up(G_{k+1})``; the last entry is ``(G_L, None)``.

    ``images``: ``(n, C, H, W)`` with ``H`` and ``W`` divisible by ``2 ** (levels - 1)``.
    """
    shape = np.shape(images)
    if isinstance(levels, bool) or not isinstance(levels, Integral) or levels < 1:
        raise ValueError(f"levels must be a positive int, got {levels!r}")
    if len(shape) != 4 or shape[2] % 2 ** (levels - 1) or shape[3] % 2 ** (levels - 1):
        raise ValueError(f"images must have shape (n, channels, height, width) with height and width divisible by "
                         f"2**(levels-1) = {2 ** (levels - 1)}, got {shape}")
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


def _json_value(v: Any) -> Any:
    """A parameter as a plain JSON value (numpy numbers as Python ones)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, Integral):
        return int(v)
    if isinstance(v, Real):
        return float(v)
    return v


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
        The threshold on ``score_samples``, read from the training images' scores under the
        current ``contamination`` (set after the fit, it moves the threshold, as for
        :class:`GANAnomalyDetector`); a value assigned to it stays.
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

    @property
    def offset_(self) -> float:
        if "_offset" in self.__dict__:
            return self.__dict__["_offset"]
        check_is_fitted(self, "train_scores_")
        return threshold_at(self.train_scores_, self.contamination)

    @offset_.setter
    def offset_(self, value: float) -> None:
        self.__dict__["_offset"] = float(value)

    def _resize(self, X: np.ndarray) -> np.ndarray:
        side = self.size if self.size is not None else X.shape[2]
        if X.shape[2:] != (side, side):
            if self.size is None:
                raise ValueError(f"images of shape {X.shape[2:]} are not square: set size=")
            t = torch.from_numpy(X.astype(np.float32))
            # antialiased when shrinking (as the single-scale detector resizes): plain bilinear
            # sampling reads 2 of every 4 rows at 64 -> 16, so a one-pixel scratch on the others vanished
            shrink = side < X.shape[2] or side < X.shape[3]
            X = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False,
                              antialias=shrink).numpy().astype(np.float64)
        return X

    def fit(self, X, y=None):
        """Fit one detector per pyramid level on normal images ``X``.

        Parameters are checked before any training; a fit that fails leaves the detector as
        it was (a refit keeps the previous model, a first fit leaves it unfitted)."""
        self._check_params()
        with fitted_state_kept(self):
            return self._fit(X)

    def _check_params(self) -> None:
        """The pyramid's own parameters (the level detectors check theirs when they fit)."""
        if isinstance(self.levels, bool) or not isinstance(self.levels, Integral) or not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be an int from 1 to {MAX_LEVELS}, got {self.levels!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, Integral)
                                      or self.size < max(2, 2 ** (self.levels - 1))):
            raise ValueError(f"size must be None or an int >= {max(2, 2 ** (self.levels - 1))} (2**(levels-1) and "
                             f"at least 2), got {self.size!r}")
        if self.contamination != "auto" and not (isinstance(self.contamination, Real)
                                                 and not isinstance(self.contamination, bool)
                                                 and 0 < self.contamination <= 0.5):
            raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5], got {self.contamination!r}")

    # ------------------------------------------------------------------ saving
    def save(self, path) -> None:
        """Save to a directory, atomically: each level's detector as safetensors + JSON in
        ``level_<k>/``, the pyramid's parameters and statistics as JSON (``lapgan.json``);
        :func:`gananomaly.load` reads it back, checking every value."""
        check_is_fitted(self)
        path = Path(path)
        meta = {"format": FORMAT_NAME, "kind": "lapgan", "format_version": FORMAT_VERSION,
                "library_version": __version__, **self.record()}
        json.dumps(meta, allow_nan=False)  # a value JSON cannot hold is refused before anything is written

        def write(tmp: Path) -> None:
            digests = [det.write_to(tmp / f"level_{k}", path) for k, det in enumerate(self.detectors_)]
            full = with_record_digest(json.loads(json.dumps({**meta, LEVELS_DIGEST_KEY: digests})))
            write_bytes(tmp / LAPGAN_CONFIG, json.dumps(full, indent=2, allow_nan=False).encode())

        atomic_dir(path, write)

    def record(self) -> dict[str, Any]:
        """The pyramid's parameters and fitted statistics as JSON values (its level detectors
        are saved on their own)."""
        check_is_fitted(self)
        params = {k: _json_value(v) for k, v in self.get_params(deep=False).items()}
        params["hidden_dims"] = None if self.hidden_dims is None else [int(h) for h in self.hidden_dims]
        if not (self.random_state is None or isinstance(self.random_state, Integral)):
            params["random_state"] = None  # a RandomState object: the refit draws fresh seeds
        return {"params": params, "image_shape": [int(v) for v in self.image_shape_],
                "level_stats": [list(t) for t in self.level_stats_],
                "level_map_stats": [{c: list(v) for c, v in d.items()} for d in self.level_map_stats_],
                "offset": float(self.offset_),
                **({} if "_offset" in self.__dict__ else {"train_scores": [float(v) for v in self.train_scores_]})}

    @classmethod
    def from_record(cls, record: dict[str, Any], detectors: list[GANAnomalyDetector], invalid) -> Any:
        """The fitted pyramid of a checked ``record`` (:meth:`record`) and its level detectors;
        ``invalid(key, what)`` raises the refusal naming a key."""
        from gananomaly.model_format import MAX_IMAGE_SIDE

        params = with_tuples(invalid.keys(record["params"], "params", {"levels"}, set(cls().get_params())))
        try:
            lap = cls(**params)
            lap._check_params()
            # the level detectors' own parameters, as a refit would pass them on
            GANAnomalyDetector(epochs=lap.epochs, latent_dim=lap.latent_dim, hidden_dims=lap.hidden_dims,
                               batch_size=lap.batch_size, weight=lap.weight, device=lap.device,
                               random_state=lap.random_state)._validate_params()
        except (TypeError, ValueError) as exc:
            invalid("params", str(exc))
        levels = lap.levels
        shape = invalid.list(record["image_shape"], "image_shape", 3, 3)
        c = invalid.int(shape[0], "image_shape[0]", 1, 3)
        side = invalid.int(shape[1], "image_shape[1]", 2 ** (levels - 1), MAX_IMAGE_SIDE)
        if invalid.int(shape[2], "image_shape[2]", 1, MAX_IMAGE_SIDE) != side or side % 2 ** (levels - 1) or c == 2:
            invalid("image_shape", f"must be (1 or 3, S, S) with S divisible by {2 ** (levels - 1)}, got {shape}")
        if lap.size is not None and lap.size != side:  # images are resized to size before the shape check
            invalid("params.size", f"is {lap.size}, but the images were fitted at side {side}")
        if len(detectors) != levels:
            invalid("params.levels", f"is {levels}, but the model holds {len(detectors)} level detectors")
        for k, det in enumerate(detectors):  # level k models a band of side S / 2**k, conditioned below the top
            want = c * (side // 2**k) ** 2
            cond = 0 if k == levels - 1 else want
            if det.n_features_in_ != want or int(det.arch_.get("context_dim", 0)) != cond:
                invalid(f"level_{k}", f"holds a detector of {det.n_features_in_} features; level {k} of "
                                      f"{tuple(shape)} images has {want}")
        stats = invalid.list(record["level_stats"], "level_stats", levels, levels)
        lap.level_stats_ = []
        for k, pair in enumerate(stats):
            pair = invalid.list(pair, f"level_stats[{k}]", 2, 2)
            lap.level_stats_.append((invalid.number(pair[0], f"level_stats[{k}][0]"),
                                     invalid.number(pair[1], f"level_stats[{k}][1]", positive=True)))
        maps = invalid.list(record["level_map_stats"], "level_map_stats", levels, levels)
        lap.level_map_stats_ = []
        for k, d in enumerate(maps):
            d = invalid.keys(d, f"level_map_stats[{k}]", set(_MAP_COMPONENTS))
            out = {}
            for comp in _MAP_COMPONENTS:
                pair = invalid.list(d[comp], f"level_map_stats[{k}].{comp}", 2, 2)
                out[comp] = (invalid.number(pair[0], f"level_map_stats[{k}].{comp}[0]"),
                             invalid.number(pair[1], f"level_map_stats[{k}].{comp}[1]", positive=True))
            lap.level_map_stats_.append(out)
        offset = invalid.number(record["offset"], "offset")
        if "train_scores" in record:  # the threshold follows contamination (else: files before it, a fixed one)
            train = invalid.list(record["train_scores"], "train_scores", 1, TRAIN_SCORES_KEPT)
            lap.train_scores_ = np.array([invalid.number(v, f"train_scores[{i}]") for i, v in enumerate(train)])
            if not np.isclose(lap.offset_, offset, rtol=1e-9, atol=1e-12):
                invalid("offset", f"is {offset}, but the training scores give {lap.offset_} at contamination "
                                  f"{lap.contamination!r}")
        else:
            lap.offset_ = offset
        lap.image_shape_ = tuple(shape)
        lap.detectors_ = list(detectors)
        return lap

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
                # the equal-rate optimiser the pyramid was measured with (a conditional fit's
                # default is two time-scale; not measured on pyramid levels)
                generator_learning_rate=LEVEL_LEARNING_RATE, betas=LEVEL_BETAS,
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
        self.__dict__.pop("_offset", None)
        train = np.sort(-self._combine(per_level))
        if len(train) > TRAIN_SCORES_KEPT:  # evenly spaced order statistics: the quantiles stay
            train = train[np.linspace(0, len(train) - 1, TRAIN_SCORES_KEPT).round().astype(int)]
        self.train_scores_ = train
        return self

    def _level_scores(self, X: np.ndarray) -> np.ndarray:
        cols = []
        for det, (band, cond) in zip(self.detectors_, laplacian_pyramid(X, len(self.detectors_))):
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
        for det, (band, cond) in zip(self.detectors_, laplacian_pyramid(X, len(self.detectors_))):
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
