import os

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one test process per core: each computes on one thread, and so do the
    # commands its tests start (they inherit the variable), so no process's threads wait on a
    # core another process holds. Set before torch is first imported; an explicit value is kept.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Modules whose tests fit models with default settings, heaviest first. `make test` runs the
# suite on several processes with whole modules as units (pytest-xdist, --dist loadfile);
# starting these first lets the processes finish together instead of one waiting for a heavy
# module handed out last. Only the order changes: every module still runs whole.
HEAVY_MODULES = (
    "test_default_quality.py",
    "test_tabular.py",
    "test_benchmarks.py",
    "test_conditional.py",
    "test_fidelity.py",
    "test_images.py",
    "test_explain_tabular.py",
    "test_gpu_check.py",
    "test_explain.py",
    "test_hostile_models.py",
    "test_estimator.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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
