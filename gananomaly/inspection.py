"""What a fitted detector can show beyond its scores: samples of the generator, reconstructions,
per-pixel (or per-feature) anomaly maps and per-feature explanations
(:class:`InspectionMixin`, a part of :class:`~gananomaly.estimator.GANAnomalyDetector`)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import _num_samples, check_is_fitted

from gananomaly import images as _images
from gananomaly import scoring as _scoring

__all__ = ["InspectionMixin"]


# generate() runs the generator on this many samples at a time, and refuses a draw of more values.
GENERATE_BLOCK = 65_536
MAX_GENERATED_VALUES = 2**31


class InspectionMixin:
    """``generate``, ``generator_fidelity``, ``reconstruct``, ``anomaly_map`` and ``explain``."""

    def generate(self, n_samples: int, *, context=None, random_state: Any = None) -> np.ndarray:
        """Draw ``n_samples`` from the generator, in the original units of the data.

        A detector fitted with a context needs ``context`` (one value per sample)."""
        check_is_fitted(self)
        if isinstance(n_samples, (bool, np.bool_)) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        values = int(n_samples) * int(np.prod(getattr(self, "image_shape_", None) or (self.n_features_in_,)))
        if values > MAX_GENERATED_VALUES:
            raise ValueError(f"n_samples={n_samples} would hold {values:,} values ({values * 8 / 2**30:.0f} GiB as "
                             f"float64), more than {MAX_GENERATED_VALUES:,}: draw them in several calls")
        rs = check_random_state(random_state)
        ctx = None
        if (getattr(self, "context_categories_", None) is not None or context is not None
                or getattr(self, "context_mean_", None) is not None):
            ctx = self._encode_context(context, np.empty((int(n_samples), 0)), reset=False)
        out = self._generator_output(int(n_samples), rs, ctx).cpu().numpy().astype(np.float64)
        return self._image_layout(self._unscale(out))

    def _generator_output(self, n: int, rs: np.random.RandomState, ctx: torch.Tensor | None) -> torch.Tensor:
        """``n`` samples of the generator in its own (standardised) units, the noise seeded
        from ``rs``, ``ctx`` (encoded contexts, one row per sample) appended to it; tables cut
        to their features."""
        rng = torch.Generator(device=self.device_).manual_seed(int(rs.randint(np.iinfo(np.int32).max)))
        z = torch.randn(n, self.arch_["latent_dim"], device=self.device_, generator=rng)
        if ctx is not None:
            z = torch.cat([z, ctx.to(self.device_)], dim=1)
        self.generator_.eval()
        with torch.inference_mode():  # in blocks: the networks' activations stay bounded
            out = torch.cat([self.generator_(z[i : i + GENERATE_BLOCK]).float() for i in range(0, n, GENERATE_BLOCK)])
        return out[:, : self.n_features_in_] if out.ndim == 2 else out

    def generator_fidelity(self, X, *, context=None, random_state: Any = None, max_rows: int = 2000
                           ) -> dict[str, float]:
        """How well the generator reproduces normal rows ``X`` that it was not trained on.

        ``fidelity_`` is measured on the held-out rows that also chose the generator kept, so
        it leans optimistic; this measures on any rows you hold back (the benchmarks pass
        their normal test rows). As many generated rows as rows of ``X`` (at most
        ``max_rows``, a random subset) are drawn, with ``X``'s own contexts for a conditional
        model, and compared in the model's standardised units (images: per channel, at the
        fitted size; an MLP fitted on images: per pixel) by
        :func:`gananomaly.fidelity.manifold_metrics`: precision, recall,
        density, coverage, reverse density and ``fidelity`` (about 1 for real samples).
        """
        from gananomaly.fidelity import manifold_metrics

        if not isinstance(max_rows, Integral) or isinstance(max_rows, bool) or max_rows < 2:
            raise ValueError(f"max_rows must be an int >= 2, got {max_rows!r}")
        rs = check_random_state(random_state)
        n = _num_samples(X)
        if n > max_rows:  # the subset first: a large image set is never scaled whole
            keep = np.sort(rs.choice(n, max_rows, replace=False))
            X = _safe_indexing(X, keep)
            if context is not None:
                if _num_samples(context) != n:
                    raise ValueError(f"context must have one value per row ({n}), got {_num_samples(context)}")
                context = _safe_indexing(np.asarray(context, dtype=object) if isinstance(context, (list, tuple))
                                         else context, keep)
        Xt, _ = self._prepare(X, context)
        if Xt.shape[0] < 2:
            raise ValueError(f"X needs at least 2 rows to measure fidelity, got {Xt.shape[0]}")
        real, ctx = Xt, None
        if Xt.ndim == 2 and Xt.shape[1] > self.n_features_in_:  # the context columns of a conditional model
            real, ctx = Xt[:, : self.n_features_in_], Xt[:, self.n_features_in_:]
        return manifold_metrics(real.cpu(), self._generator_output(Xt.shape[0], rs, ctx).cpu())

    def _image_layout(self, out: np.ndarray) -> np.ndarray:
        """Rows of an MLP fitted on images (flattened ``C*H*W`` features) as ``(n, C, H, W)``,
        the layout a convolutional model returns; anything else unchanged."""
        shape = getattr(self, "image_shape_", None)
        if shape is not None and out.ndim == 2:
            return out.reshape((out.shape[0], *shape))
        return out

    def anomaly_map(self, X, *, context=None, component: str = "combined") -> np.ndarray:
        """Where each sample is anomalous: a map per image, or a value per feature of a table.

        * ``"reconstruction"``: for images, the map the reconstruction score pools: the
          squared residual ``x - G(E(x))`` in two bands (its fine detail, and all of it), mean
          over channels, each divided by its training mean at that pixel and summed (a typical
          training pixel is about 2); for tables, the squared residual per feature in
          standardised units;
        * ``"discriminator"``: the feature-matching residual ``||f(x) - f(G(E(x)))||**2``
          brought back to the input: the magnitude of its gradient with respect to each pixel
          (feature) of ``x``, so the map shows which inputs D's features react to;
        * ``"combined"``: ``(1 - weight) * R + weight * D`` with ``R`` the reconstruction map
          in units of a typical training pixel (for tables: divided by the training median of
          the reconstruction score) and ``D`` the discriminator map rescaled to the same row's mean of ``R``:
          every row on its own scale, never a statistic of the batch.

        Images come back at the fitted image size, ``(n, H, W)``; tables as ``(n, n_features)``.
        No latent refinement; rows are mapped in batches and never influence each other.
        """
        if component not in ("combined", "reconstruction", "discriminator"):
            raise ValueError(f"component must be 'combined', 'reconstruction' or 'discriminator', got {component!r}")
        Xt, _ = self._prepare(X, context)
        cfg = self.score_config_
        rec_map, disc_map = _scoring.residual_maps(self.generator_, self.discriminator_, self.encoder_, Xt,
                                                   self.device_, cfg, min(self._score_cfg(Xt).batch_size, 1024))
        if getattr(self, "image_shape_", None) is not None and rec_map.ndim == 2:  # an MLP on flattened images
            rec_map, disc_map = (self._image_layout(m).mean(axis=1) for m in (rec_map, disc_map))
        if rec_map.ndim == 3 and tuple(rec_map.shape[1:]) != tuple(self.image_shape_[1:]):
            rec_map = _images.resize(rec_map[:, None], self.image_shape_[1:])[:, 0]
            disc_map = _images.resize(disc_map[:, None], self.image_shape_[1:])[:, 0]
        if component == "reconstruction":
            return rec_map
        if component == "discriminator":
            return disc_map
        # Each row on its own scale (never a statistic of the batch): the reconstruction map
        # in units of the training median; the discriminator map spreads the same row's mean
        # level over the inputs D's features react to.
        if cfg.map_scale is not None:  # images: each of the two bands is 1 at a typical training pixel
            rec_rel = rec_map / 2.0
        else:
            rec_rel = rec_map / max(cfg.loc["reconstruction"], 1e-12)
        axes = tuple(range(1, rec_map.ndim))
        level = rec_rel.mean(axis=axes, keepdims=True)
        disc_rel = disc_map / np.maximum(disc_map.mean(axis=axes, keepdims=True), 1e-12) * level
        return (1.0 - self.weight) * rec_rel + self.weight * disc_rel

    def explain(self, X, *, context=None, top: int | None = None) -> pd.DataFrame:
        """Why each row scores as it does: every feature's contribution to the anomaly score.

        ``contribution`` is the feature's first-order share of the combined anomaly score
        (gradient times input, the training mean as reference; see
        :func:`gananomaly.scoring.contributions`): positive features push the row towards
        anomalous. ``expected`` is what the model expected there, ``G(E(x))`` in the
        original units.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) (tables; for images use :meth:`anomaly_map`)
        top : int, optional
            Keep only each row's ``top`` features with the largest contribution.

        Returns
        -------
        Long DataFrame with one line per (row, feature): ``row`` (position in ``X``),
        ``rank`` (1 = largest contribution), ``feature``, ``contribution``, ``value`` and
        ``expected``, sorted by row and rank.
        """
        if getattr(self, "image_shape_", None) is not None:
            raise ValueError("explain() is for tables; for images use anomaly_map(X), a map per pixel")
        if top is not None and (isinstance(top, bool) or not isinstance(top, Integral) or top < 1):
            raise ValueError(f"top must be a positive int, got {top!r}")
        Xt, Xv = self._prepare(X, context)
        contrib = _scoring.contributions(self.generator_, self.discriminator_, self.encoder_, Xt, self.device_,
                                         self.score_config_, (self.weight, self.latent_weight, self._knn_weight()))
        expected = self._reconstruct(Xt)
        n, d = contrib.shape
        names = np.asarray(getattr(self, "feature_names_in_", [f"x{j}" for j in range(d)]), dtype=object)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, : d if top is None else min(top, d)]
        rows = np.repeat(np.arange(n), order.shape[1])
        cols = order.ravel()
        values = np.asarray(Xv, dtype=np.float64).reshape(n, -1)
        return pd.DataFrame({"row": rows, "rank": np.tile(np.arange(1, order.shape[1] + 1), n),
                             "feature": names[cols], "contribution": contrib[rows, cols],
                             "value": values[rows, cols], "expected": expected[rows, cols]})

    def reconstruct(self, X, *, context=None) -> np.ndarray:
        """``G(E(x))`` in the original units (no latent refinement).

        Images come back channel-first at the fitted image size, ``(n, C, H, W)`` (for
        convolutional networks resized from the network's resolution).
        """
        return self._image_layout(self._reconstruct(self._prepare(X, context)[0]))

    def _reconstruct(self, Xt: torch.Tensor) -> np.ndarray:
        """``G(E(x))`` of prepared rows, in the original units."""
        self.generator_.eval(), self.encoder_.eval()
        outs = []
        bs = self._score_cfg(Xt).batch_size
        with torch.inference_mode():
            for start in range(0, Xt.shape[0], bs):
                x = _scoring.pad_rows(Xt[start : start + bs])
                n = min(bs, Xt.shape[0] - start)
                outs.append(self.generator_(self.encoder_(x.to(self.device_)))[:n].float().cpu())
        out = torch.cat(outs).numpy().astype(np.float64).reshape(Xt.shape)
        if out.ndim == 2:
            out = out[:, : self.n_features_in_]  # drop the context columns
        return self._unscale(out)

