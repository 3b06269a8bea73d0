"""explain(): per-feature contributions that point at the broken column."""

import numpy as np
import pandas as pd
import pytest
import torch

from gananomaly import GANAnomalyDetector


@pytest.fixture(scope="module")
def correlated():
    rng = np.random.RandomState(0)
    d = 8
    A = rng.randn(d, d)
    L = np.linalg.cholesky(A @ A.T / d + 0.2 * np.eye(d))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    X = pd.DataFrame(rng.randn(2000, d) @ L.T, columns=[f"c{j}" for j in range(d)])
    det = GANAnomalyDetector(random_state=0).fit(X)
    torch.set_num_threads(before)
    return rng, L, X, det


def test_broken_column_is_ranked_first(correlated):
    """Rows with one column pushed 5 standard deviations off: that column ranks first for
    >= 90 % of them; rows with a pair pushed 4 deviations off: both in the top 2 for most.
    The per-feature reconstruction residual (the anomaly map) ranks the broken column
    first for about a quarter of the rows and fails this test."""
    rng, L, X, det = correlated
    d, sd = X.shape[1], X.to_numpy().std(0)
    T = rng.randn(300, d) @ L.T
    cols = rng.randint(0, d, 300)
    T[np.arange(300), cols] += 5 * sd[cols] * rng.choice([-1, 1], 300)
    top = det.explain(pd.DataFrame(T, columns=X.columns), top=1)
    first = np.mean(top["feature"].to_numpy() == X.columns.to_numpy()[cols])
    P = rng.randn(150, d) @ L.T
    pairs = np.array([rng.choice(d, 2, replace=False) for _ in range(150)])
    for k in range(2):
        P[np.arange(150), pairs[:, k]] += 4 * sd[pairs[:, k]] * rng.choice([-1, 1], 150)
    top2 = det.explain(pd.DataFrame(P, columns=X.columns), top=2)
    both = np.mean([set(g["feature"]) == {f"c{a}", f"c{b}"} for (_, g), (a, b) in zip(top2.groupby("row"), pairs)])
    rec_map = det.anomaly_map(pd.DataFrame(T, columns=X.columns), component="reconstruction")
    print(first, both, np.mean(rec_map.argmax(1) == cols))
    assert first >= 0.9 and both >= 0.75, (first, both)
    assert np.mean(rec_map.argmax(1) == cols) < 0.9  # what the floor would catch


def test_explain_table_layout(correlated):
    _, _, X, det = correlated
    out = det.explain(X.iloc[:5])
    assert list(out.columns) == ["row", "rank", "feature", "contribution", "value", "expected"]
    assert len(out) == 5 * X.shape[1] and (out.groupby("row")["contribution"].is_monotonic_decreasing).all()
    np.testing.assert_allclose(out.query("row == 0").set_index("feature").loc[X.columns, "value"], X.iloc[0])
    np.testing.assert_allclose(out.query("row == 0").set_index("feature").loc[X.columns, "expected"],
                               det.reconstruct(X.iloc[:1])[0])
    with pytest.raises(ValueError, match="top"):
        det.explain(X.iloc[:2], top=0)
    with pytest.raises(ValueError, match="anomaly_map"):
        GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(np.random.rand(20, 8, 8)).explain(
            np.random.rand(2, 8, 8))


def test_a_training_row_is_explained_as_smoothly_as_any_row():
    """The k-NN term of the explanations kept the bank row at zero distance that scoring
    leaves out (a training row itself): the gradient of a distance to itself points wherever
    rounding puts it, so training rows and their duplicates got noise. A shift of 1e-3 moved
    their contributions by about the size of the contributions; now by a few percent."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4))
    X[:, 1] += X[:, 0]
    det = GANAnomalyDetector(epochs=5, encoder_epochs=5, hidden_dims=(32,), random_state=0).fit(X)

    def contributions(A):
        return det.explain(A).sort_values(["row", "feature"])["contribution"].to_numpy().reshape(len(A), -1)

    seen, fresh = X[:30], rng.normal(size=(30, 4))
    moved = [np.abs(contributions(A) - contributions(A + 1e-3)).max() for A in (seen, fresh)]
    typical = np.abs(contributions(seen)).mean()
    assert moved[0] < 0.05 * typical and moved[0] < 5 * moved[1] + 0.05 * typical, (moved, typical)
