"""Benchmark data sets: real data shipped with scikit-learn, built in the ODDS manner, and
generated data with the four anomaly types of ADBench (local, global, clustered, dependency).

Every data set follows the semi-supervised (novelty) protocol: the detector is trained on
normal rows only and tested on held-out normal rows plus anomalies. ``seed`` changes the
train/test split, the anomaly subsample and (for generated data) the anomalies, never the
definition of the task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine

__all__ = ["Split", "REAL", "GENERATED", "QUICK", "load", "names", "mixture_modes"]

TEST_FRACTION = 0.3


@dataclass
class Split:
    """One train/test split: ``y_test`` is 1 for anomalies, 0 for normal rows."""

    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    description: str

    def summary(self) -> dict:
        return {
            "name": self.name,
            "n_train": int(self.X_train.shape[0]),
            "n_features": int(self.X_train.shape[1]),
            "n_test_normal": int((self.y_test == 0).sum()),
            "n_test_anomalies": int(self.y_test.sum()),
            "description": self.description,
        }


def _novelty_split(
    name: str, normal: np.ndarray, anomalies: np.ndarray, seed: int, description: str,
    max_anomalies: int | None = None,
) -> Split:
    """Train on ``1 - TEST_FRACTION`` of the normal rows; test on the rest plus anomalies
    (optionally a random subsample of ``max_anomalies`` of them)."""
    rng = np.random.RandomState(seed)
    perm = rng.permutation(normal.shape[0])
    n_test = int(round(TEST_FRACTION * normal.shape[0]))
    test_normal, train = normal[perm[:n_test]], normal[perm[n_test:]]
    if max_anomalies is not None and anomalies.shape[0] > max_anomalies:
        anomalies = anomalies[rng.choice(anomalies.shape[0], max_anomalies, replace=False)]
    X_test = np.vstack([test_normal, anomalies]).astype(np.float64)
    y_test = np.r_[np.zeros(test_normal.shape[0], dtype=int), np.ones(anomalies.shape[0], dtype=int)]
    return Split(name, train.astype(np.float64), X_test, y_test, description)


# ----------------------------------------------------------------------------- real data
def breast_cancer(seed: int) -> Split:
    """Wisconsin diagnostic breast cancer: benign rows normal, malignant rows anomalies
    (as the demo and ODDS' breastw/wbc; every malignant row is kept in the test set)."""
    data = load_breast_cancer()
    X, y = data.data, data.target
    return _novelty_split("breast_cancer", X[y == 1], X[y == 0], seed,
                          "benign normal, malignant anomalies (all 212)")


def wine(seed: int) -> Split:
    """Wine (ODDS' wine): cultivars 1 and 2 are normal, cultivar 0 is made rare (10 rows)."""
    data = load_wine()
    X, y = data.data, data.target
    return _novelty_split("wine", X[y != 0], X[y == 0], seed,
                          "cultivars 1+2 normal, 10 rows of cultivar 0 as anomalies", max_anomalies=10)


def digits(seed: int) -> Split:
    """Handwritten digits 8x8: digit 0 is normal, 60 rows of the other digits are anomalies."""
    data = load_digits()
    X, y = data.data, data.target
    return _novelty_split("digits", X[y == 0], X[y != 0], seed,
                          "digit 0 normal, 60 rows of digits 1-9 as anomalies", max_anomalies=60)


def iris(seed: int) -> Split:
    """Iris: setosa and versicolor are normal, 10 virginica rows are anomalies (virginica
    overlaps versicolor, so this is not the trivially separable setosa task)."""
    data = load_iris()
    X, y = data.data, data.target
    return _novelty_split("iris", X[y != 2], X[y == 2], seed,
                          "setosa+versicolor normal, 10 virginica rows as anomalies", max_anomalies=10)


# ----------------------------------------------------------------------------- generated data
N_FEATURES = 10
N_COMPONENTS = 3
N_TRAIN = 500
N_TEST_NORMAL = 300
N_ANOMALIES = 30
ALPHA = 5.0  # ADBench's scale for local (covariance) and clustered (mean) anomalies


def _mixture(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed Gaussian mixture with correlated components (the normal distribution).

    It depends only on the benchmark, not on the seed, so every seed faces the same task.
    """
    rng = np.random.RandomState(12345)
    means = rng.uniform(-3, 3, size=(N_COMPONENTS, N_FEATURES))
    covs = []
    for _ in range(N_COMPONENTS):
        a = rng.randn(N_FEATURES, N_FEATURES) / np.sqrt(N_FEATURES)
        covs.append(a @ a.T + 0.05 * np.eye(N_FEATURES))
    weights = np.full(N_COMPONENTS, 1.0 / N_COMPONENTS)
    return means, np.array(covs), weights


def _draw(rng: np.random.RandomState, n: int, means: np.ndarray, covs: np.ndarray, weights: np.ndarray,
          ) -> np.ndarray:
    comp = rng.choice(len(weights), size=n, p=weights)
    out = np.empty((n, means.shape[1]))
    for k in range(len(weights)):
        idx = np.flatnonzero(comp == k)
        out[idx] = rng.multivariate_normal(means[k], covs[k], size=idx.size)
    return out


def _generated(kind: str, seed: int) -> Split:
    means, covs, weights = _mixture(seed)
    rng = np.random.RandomState(seed)
    normal = _draw(rng, N_TRAIN + N_TEST_NORMAL, means, covs, weights)
    if kind == "local":
        anomalies = _draw(rng, N_ANOMALIES, means, covs * ALPHA, weights)
        text = f"mixture components with covariance x{ALPHA:g}"
    elif kind == "global":
        lo, hi = normal.min(0), normal.max(0)
        span = hi - lo
        anomalies = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=(N_ANOMALIES, N_FEATURES))
        text = "uniform over the normal range widened by 10% per feature"
    elif kind == "clustered":
        anomalies = _draw(rng, N_ANOMALIES, means * ALPHA, covs, weights)
        text = f"mixture components with means x{ALPHA:g}"
    elif kind == "dependency":
        # Every feature drawn from its own normal marginal, independently of the others:
        # the marginals are right, the dependence structure is broken.
        pool = _draw(rng, N_ANOMALIES * N_FEATURES, means, covs, weights)
        cols = [pool[rng.choice(pool.shape[0], N_ANOMALIES, replace=False), j] for j in range(N_FEATURES)]
        anomalies = np.column_stack(cols)
        text = "normal marginals drawn independently (dependence broken)"
    else:  # pragma: no cover - guarded by GENERATED
        raise ValueError(f"unknown anomaly type {kind!r}")
    train, test_normal = normal[:N_TRAIN], normal[N_TRAIN:]
    X_test = np.vstack([test_normal, anomalies])
    y_test = np.r_[np.zeros(N_TEST_NORMAL, dtype=int), np.ones(N_ANOMALIES, dtype=int)]
    return Split(f"gen_{kind}", train, X_test, y_test,
                 f"{N_COMPONENTS}-component correlated Gaussian mixture in {N_FEATURES}-D; anomalies: {text}")


def mixture_modes() -> tuple[np.ndarray, np.ndarray]:
    """Means and covariances of the normal mixture of the generated data sets (the same for
    every seed), for mode coverage of a generator."""
    means, covs, _ = _mixture(0)
    return means, covs


def _gen(kind: str) -> Callable[[int], Split]:
    def load_kind(seed: int) -> Split:
        return _generated(kind, seed)

    load_kind.__name__ = f"gen_{kind}"
    return load_kind


REAL: dict[str, Callable[[int], Split]] = {
    "breast_cancer": breast_cancer,
    "wine": wine,
    "digits": digits,
    "iris": iris,
}
GENERATED: dict[str, Callable[[int], Split]] = {
    f"gen_{kind}": _gen(kind) for kind in ("local", "global", "clustered", "dependency")
}
QUICK = ("breast_cancer", "wine", "gen_local")


def dense_cluster(seed: int) -> Split:
    """Three clusters of very different size and spread in 6-D (40 rows of std 0.15, 400 of 1,
    2,000 of 3); anomalies 0.9-1.3 from the centre of the tight one: 6-9 of its deviations, but
    nearer to it than the broad cluster's rows are to each other. A global density (a k-NN
    distance, one Gaussian) calls them normal; a local one (LOF) does not."""
    from sklearn.datasets import make_blobs

    d = 6
    rng = np.random.RandomState(seed)
    X, _ = make_blobs(n_samples=[40, 400, 2000], n_features=d, centers=np.array([[0] * d, [6] * d, [-8] * d], float),
                      cluster_std=[0.15, 1.0, 3.0], random_state=seed)
    u = rng.normal(size=(60, d))
    anomalies = u / np.linalg.norm(u, axis=1, keepdims=True) * rng.uniform(0.9, 1.3, size=(60, 1))
    return _novelty_split("dense_cluster", X, anomalies, seed, "clusters of unequal density; anomalies just off "
                                                                "the tight one")


def reversed_cancer(seed: int) -> Split:
    """Breast cancer the other way round: malignant rows normal, 40 benign rows anomalies (they
    look like shrunken malignant rows: along the data's own size axis, past its end)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.RandomState(seed)
    benign = X[y == 1]
    return _novelty_split("reversed_cancer", X[y == 0], benign[rng.choice(len(benign), 40, replace=False)], seed,
                          "malignant normal, benign anomalies")


#: Data sets where a detector's density must be local or must see the data's extent; run them by
#: name (``--datasets dense_cluster,reversed_cancer``): not part of the default runs, whose
#: published figures they would change.
STRESS: dict[str, Callable[[int], Split]] = {"dense_cluster": dense_cluster, "reversed_cancer": reversed_cancer}


def names(quick: bool = False) -> list[str]:
    """Data sets of a run: a small subset with ``quick``."""
    return list(QUICK) if quick else [*REAL, *GENERATED]


# ``NAME@split0``: data set NAME with the split of seed 0 for every seed, so that the seed
# moves only the models (the std over seeds is then the model's own, not the split's).
FIXED_SPLIT = "@split0"


def load(name: str, seed: int) -> Split:
    """The split of data set ``name`` for ``seed`` (``NAME@split0``: always seed 0's split)."""
    if name.endswith(FIXED_SPLIT):
        split = load(name[: -len(FIXED_SPLIT)], 0)
        split.name = name
        return split
    if name in REAL:
        return REAL[name](seed)
    if name in GENERATED:
        return GENERATED[name](seed)
    if name in STRESS:
        return STRESS[name](seed)
    raise KeyError(f"unknown data set {name!r}; choose from {[*REAL, *GENERATED, *STRESS]}")
