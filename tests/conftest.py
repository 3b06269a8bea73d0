import numpy as np
import pytest


@pytest.fixture(scope="session")
def blobs():
    """Three Gaussian blobs in 5-D; test set adds far outliers drawn from a wide box."""
    rng = np.random.RandomState(0)
    centers = rng.uniform(-4, 4, size=(3, 5))

    def draw(n):
        return centers[rng.randint(0, 3, n)] + 0.5 * rng.randn(n, 5)

    X_train = draw(600)
    outliers = rng.uniform(-10, 10, size=(400, 5))
    dist = np.min(np.linalg.norm(outliers[:, None, :] - centers[None], axis=2), axis=1)
    outliers = outliers[dist > 4][:40]
    X_test = np.vstack([draw(200), outliers])
    y_test = np.r_[np.zeros(200, dtype=int), np.ones(len(outliers), dtype=int)]
    return X_train, X_test, y_test


@pytest.fixture(scope="session")
def cancer():
    from gananomaly.demo import breast_cancer_split

    X_train, X_test, y_test = breast_cancer_split(0)
    return X_train.to_numpy(), X_test.to_numpy(), y_test


@pytest.fixture(scope="session")
def fitted_blobs(blobs):
    from gananomaly import GANAnomalyDetector

    X_train, _, _ = blobs
    return GANAnomalyDetector(epochs=30, random_state=0).fit(X_train)
