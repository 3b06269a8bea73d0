"""How well a generator has learned the normal data, measured on held-out normal rows.

A GAN whose generator has collapsed onto a small blob still yields a usable distance-like
anomaly score on easy data, so detection quality alone cannot tell a working GAN from a
broken one. These measures compare generated rows with real held-out rows directly:

* **k-NN manifold precision and recall** (Kynkaanniemi et al. 2019): the share of generated
  rows that fall inside the real rows' k-NN balls (are they realistic?), and the share of
  real rows inside the generated rows' balls (is every part of the data produced?).
* **density and coverage** (Naeem et al. 2020): density counts how many real balls hold each
  generated row (robust to outlying real rows; about 1 for a perfect generator); coverage is
  the share of real rows whose ball holds at least one generated row (drops with every
  missed mode; about ``1 - 2**-k`` for a perfect generator).
* **reverse density**: density with the roles swapped, how many generated rows' balls hold
  each real row (about 1 for a perfect generator in any dimension). It falls when the
  generated rows are packed tighter than the data. Coverage cannot see that in many
  dimensions: a real row's ball is then wide enough to hold a shrunken copy of the data, so a
  generator whose samples huddle near the modes scores full coverage and density.
* ``fidelity``: the harmonic mean of ``min(density, 1)``, coverage and
  ``min(reverse_density, 1)``, one number in [0, 1] that falls when the generator misses modes,
  when it produces rows where the data never lies, and when its rows are too narrow. Training
  keeps the generator with the best value.
* **Parzen log-likelihood gap** (Goodfellow et al. 2014): held-out log-likelihood under a
  Gaussian Parzen window on generated rows minus the same under real rows.
* **mode coverage** on data whose modes are known (synthetic mixtures).

Everything is computed with batched ``torch.cdist`` in float64; nothing loops per row.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "FIDELITY_KEYS", "MEASURE_VERSION", "NEIGHBOURS", "WARN_FIDELITY", "GeneratorFidelityWarning", "manifold_metrics",
    "parzen_gap", "mode_coverage", "expected_coverage", "harmonic_mean",
]

# Which definition of ``fidelity`` (results of different definitions do not average):
# 1 = density and coverage, 2 = density, coverage and reverse density.
MEASURE_VERSION = 2
# k of the k-NN balls (Naeem et al. 2020 use 5).
NEIGHBOURS = 5
FIDELITY_KEYS = ("precision", "recall", "density", "coverage", "reverse_density", "fidelity")
# Below this fidelity on held-out rows the generator has not learned the normal data: real
# samples score near 1, a collapsed generator near 0.
WARN_FIDELITY = 0.5


class GeneratorFidelityWarning(UserWarning):
    """The generator does not reproduce the held-out normal data (missed modes, samples where
    the data never lies, or samples narrower than the data): its anomaly scores are a
    distance, not a learned density."""


def _as_tensor(a) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.detach().reshape(t.shape[0], -1).to("cpu", torch.float64)


def _kth_radius(points: torch.Tensor, k: int, d: torch.Tensor | None = None) -> torch.Tensor:
    """Distance of every row to its k-th nearest neighbour among the other rows (``d``: their
    distance matrix, when already computed)."""
    k = min(k, points.shape[0] - 1)
    if k < 1:
        return torch.full((points.shape[0],), math.inf, dtype=points.dtype)
    d = torch.cdist(points, points) if d is None else d
    return d.topk(k + 1, dim=1, largest=False).values[:, k]  # column 0 is the row itself


def _real_balls(points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-NN balls of the real rows: radius and weight of each.

    A row with at least ``k`` exact copies (integer, binary or one-hot columns) would get a
    ball of radius 0, which no continuous generator can hit, and a generator that learned such
    data would measure as a collapsed one. Its ball is widened to half the distance to the
    nearest other value (generated rows nearer to it than to any other value count), and
    weighted ``k / m`` in ``density`` (``m`` rows share the value) so that their ``m`` balls
    together count as ``k`` balls, as for rows without copies. Copies are exact equality (no
    tolerance), so rows without copies keep their balls bit for bit. Generated rows keep the
    plain rule: a generator that repeats one row exactly has collapsed, and its zero radii say
    so."""
    d = torch.cdist(points, points)
    radius = _kth_radius(points, k, d)
    weight = torch.ones_like(radius)
    _, group, size = torch.unique(points, dim=0, return_inverse=True, return_counts=True)
    m = size[group]  # rows sharing each row's value, itself included
    k_eff = min(k, points.shape[0] - 1)
    point_like = m > k_eff
    if not bool(point_like.any()):
        return radius, weight
    rows = torch.nonzero(point_like)[:, 0]
    d = d[rows].masked_fill(group[None, :] == group[rows][:, None], math.inf)  # its own value's rows
    gap = d.min(1).values
    radius[rows] = torch.where(torch.isfinite(gap), 0.5 * gap, torch.zeros_like(gap))
    weight[rows] = k_eff / m[rows].to(weight.dtype)
    return radius, weight


def manifold_metrics(real, fake, k: int = NEIGHBOURS) -> dict[str, float]:
    """Precision, recall, density, coverage, reverse density and fidelity of ``fake`` rows
    against ``real`` rows.

    Parameters
    ----------
    real, fake : array-like or tensor of shape (n, ...) and (m, ...)
        Rows in the same (ideally standardised) space; flattened beyond the first axis.
    k : int, default=5
        Neighbours of the k-NN balls.

    Returns
    -------
    dict with ``precision``, ``recall``, ``density``, ``coverage``, ``reverse_density`` and
    ``fidelity`` (floats).
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    R, Fk = _as_tensor(real), _as_tensor(fake)
    if R.shape[0] < 2 or Fk.shape[0] < 2:
        raise ValueError(f"need at least 2 real and 2 generated rows, got {R.shape[0]} and {Fk.shape[0]}")
    if R.shape[1] != Fk.shape[1]:
        raise ValueError(f"real rows have {R.shape[1]} features but generated rows have {Fk.shape[1]}")
    if not (torch.isfinite(R).all() and torch.isfinite(Fk).all()):
        nan = float("nan")
        return {key: nan for key in FIDELITY_KEYS}
    (r_real, w_real), r_fake = _real_balls(R, k), _kth_radius(Fk, k)
    d = torch.cdist(R, Fk)  # (n_real, n_fake)
    inside_real = d <= r_real[:, None]  # fake j inside the ball of real i
    inside_fake = d <= r_fake[None, :]  # real i inside the ball of fake j
    precision = float(inside_real.any(0).double().mean())
    recall = float(inside_fake.any(1).double().mean())
    density = float((inside_real.double() * w_real[:, None]).sum() / (min(k, R.shape[0] - 1) * Fk.shape[0]))
    reverse = float(inside_fake.double().sum() / (min(k, Fk.shape[0] - 1) * R.shape[0]))
    coverage = float((d.min(1).values <= r_real).double().mean())
    fidelity = harmonic_mean(min(density, 1.0), coverage, min(reverse, 1.0))
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage,
            "reverse_density": reverse, "fidelity": fidelity}


def harmonic_mean(*parts: float) -> float:
    """Harmonic mean of non-negative measures (0 when any is 0)."""
    return 0.0 if min(parts) == 0 else len(parts) / sum(1.0 / p for p in parts)


def expected_coverage(k: int = NEIGHBOURS) -> float:
    """Coverage of a perfect generator with as many samples as real rows (Naeem et al.)."""
    return 1.0 - 0.5**k


def parzen_gap(real_reference, fake, held_out) -> dict[str, float]:
    """Parzen log-likelihood (nats per row) of ``held_out`` under a window on ``fake`` rows,
    and the gap to the same under ``real_reference`` rows (as many as ``fake`` for a fair
    comparison). The bandwidth of each window is chosen on the first half of ``held_out``
    and the likelihood measured on the second half. A gap near 0 means the generator
    explains held-out data as well as real samples do; large negative gaps mean it has not
    learned the data."""
    from gananomaly.parzen import parzen_log_likelihood

    H = _as_tensor(held_out).numpy()
    if H.shape[0] < 4:
        raise ValueError(f"need at least 4 held-out rows, got {H.shape[0]}")
    valid, test = H[: H.shape[0] // 2], H[H.shape[0] // 2 :]
    fake_ll = parzen_log_likelihood(_as_tensor(fake).numpy(), test, valid).mean_log_likelihood
    real_ll = parzen_log_likelihood(_as_tensor(real_reference).numpy(), test, valid).mean_log_likelihood
    return {"parzen_ll": float(fake_ll), "parzen_ll_real": float(real_ll), "parzen_gap": float(fake_ll - real_ll)}


def mode_coverage(samples, centers, radius: float, *, min_share: float = 0.25) -> dict[str, float]:
    """How many known modes a generator reproduces.

    A sample belongs to its nearest centre when it lies within ``radius`` of it. A mode
    counts as covered when it holds at least ``min_share`` of its fair share
    (``n_samples / n_modes``) of samples.

    Returns
    -------
    dict with ``modes`` (covered modes), ``n_modes``, ``high_quality`` (share of samples
    within ``radius`` of some centre) and ``largest_share`` (share of samples in the fullest
    mode).
    """
    S, C = _as_tensor(samples), _as_tensor(centers)
    d = torch.cdist(S, C)
    nearest = d.argmin(1)
    close = d.min(1).values <= radius
    counts = torch.bincount(nearest[close], minlength=C.shape[0])
    fair = S.shape[0] / C.shape[0]
    return {"modes": int((counts >= min_share * fair).sum()), "n_modes": int(C.shape[0]),
            "high_quality": float(close.double().mean()), "largest_share": float(counts.max() / S.shape[0])}
