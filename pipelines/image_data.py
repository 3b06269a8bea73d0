"""Built-in image data sets (shipped with scikit-learn, no download).

* :func:`digits_one_class`: scikit-learn's 8x8 handwritten digits in the one-class
  protocol: one digit is normal (part of it trains the detector), every other digit is an
  anomaly.
* :func:`texture_defects`: grey 32x32 patches cut from one of scikit-learn's sample
  photographs, with defects planted on held-out patches (scratches, spots, noise, foreign
  texture from the other photograph).
"""

from __future__ import annotations

import numpy as np

__all__ = ["digits_one_class", "texture_defects", "TEXTURE_DEFECTS"]

TEXTURE_DEFECTS = ("scratch", "spot", "noise", "foreign")


def digits_one_class(
    digit: int, *, seed: int = 0, test_size: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-class split of :func:`sklearn.datasets.load_digits`.

    Parameters
    ----------
    digit : int in 0..9
        The normal class.
    seed : int, default=0
        Seeds the split of the normal class.
    test_size : float, default=0.3
        Fraction of the normal class held out for the test set.

    Returns
    -------
    X_train : ndarray of shape (n_train, 8, 8)
        Pixel values 0..16 of the normal digit.
    X_test : ndarray of shape (n_test, 8, 8)
        The held-out normal images followed by every image of the other digits.
    y_test : ndarray of int, shape (n_test,)
        1 for anomalies (other digits), 0 for the normal digit.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if int(digit) != digit or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    data = load_digits()
    X, y = data.images.astype(np.float64), data.target
    train, test_normal = train_test_split(X[y == digit], test_size=test_size, random_state=seed)
    anomalies = X[y != digit]
    X_test = np.concatenate([test_normal, anomalies])
    y_test = np.r_[np.zeros(len(test_normal), dtype=int), np.ones(len(anomalies), dtype=int)]
    return train, X_test, y_test


def _grey(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def _patches(image: np.ndarray, n: int, size: int, rng: np.random.RandomState) -> np.ndarray:
    rows = rng.randint(0, image.shape[0] - size + 1, n)
    cols = rng.randint(0, image.shape[1] - size + 1, n)
    return np.stack([image[r : r + size, c : c + size] for r, c in zip(rows, cols)])


def _plant(patch: np.ndarray, kind: str, rng: np.random.RandomState, foreign: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """The patch with a defect of ``kind`` planted, and the defect's mask."""
    out = patch.copy()
    size = patch.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        dist = np.abs((yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle))
        along = np.abs((yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle))
        mask = (dist < 1.0) & (along < size * 0.35)
        out[mask] = 1.0 if patch[mask].mean() < 0.5 else 0.0
    elif kind == "spot":
        r = rng.uniform(size * 0.08, size * 0.16)
        cy, cx = rng.uniform(r, size - r, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        out[mask] = 1.0 if patch[mask].mean() < 0.5 else 0.0
    elif kind == "noise":
        side = size // 3
        y0, x0 = rng.randint(0, size - side + 1, 2)
        out[y0 : y0 + side, x0 : x0 + side] += rng.normal(0, 0.2, (side, side))
        mask = np.zeros((size, size), dtype=bool)
        mask[y0 : y0 + side, x0 : x0 + side] = True
    elif kind == "foreign":
        side = size // 2
        y0, x0 = rng.randint(0, size - side + 1, 2)
        out[y0 : y0 + side, x0 : x0 + side] = foreign[:side, :side]
        mask = np.zeros((size, size), dtype=bool)
        mask[y0 : y0 + side, x0 : x0 + side] = True
    else:  # pragma: no cover - kinds are validated by the caller
        raise ValueError(kind)
    return np.clip(out, 0.0, 1.0), mask


def texture_defects(
    *,
    n_train: int = 600,
    n_test_normal: int = 200,
    n_per_defect: int = 50,
    size: int = 32,
    seed: int = 0,
    return_masks: bool = False,
):
    """Texture inspection task from :func:`sklearn.datasets.load_sample_images`.

    Normal images are grey ``size x size`` patches of ``china.jpg``: training patches come
    from the left 60% of the photograph, test patches from the right 40% (spatially
    disjoint). Each defect kind in :data:`TEXTURE_DEFECTS` is planted on its own held-out
    patches: ``scratch`` (a thin line of saturated pixels), ``spot`` (a saturated disk),
    ``noise`` (Gaussian noise, sigma 0.2, on a square of a third of the side), ``foreign``
    (a quarter of the patch replaced by ``flower.jpg``).

    Returns
    -------
    X_train : ndarray of shape (n_train, size, size), values in [0, 1]
    X_test : ndarray of shape (n_test_normal + 4 * n_per_defect, size, size)
    kinds : ndarray of str, shape (n_test,)
        ``"normal"`` or the defect kind of each test image.
    masks : ndarray of bool, shape (n_test, size, size)
        Only with ``return_masks=True``: the planted defect's pixels (all False on normal
        images), for pixel-level evaluation of anomaly maps.
    """
    from sklearn.datasets import load_sample_images

    rng = np.random.RandomState(seed)
    china, flower = (_grey(img) for img in load_sample_images().images)
    split = int(china.shape[1] * 0.6)
    train = _patches(china[:, :split], n_train, size, rng)
    held_out = china[:, split:]
    test = [_patches(held_out, n_test_normal, size, rng)]
    kinds = ["normal"] * n_test_normal
    masks = [np.zeros((n_test_normal, size, size), dtype=bool)]
    for kind in TEXTURE_DEFECTS:
        base = _patches(held_out, n_per_defect, size, rng)
        foreign = _patches(flower, n_per_defect, size, rng)
        planted = [_plant(p, kind, rng, f) for p, f in zip(base, foreign)]
        test.append(np.stack([img for img, _ in planted]))
        masks.append(np.stack([m for _, m in planted]))
        kinds += [kind] * n_per_defect
    if return_masks:
        return train, np.concatenate(test), np.asarray(kinds), np.concatenate(masks)
    return train, np.concatenate(test), np.asarray(kinds)
