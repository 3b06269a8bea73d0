"""gananomaly.explanations: contributions per input column, the top-k frame."""

import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.datasets import mixed_table
from gananomaly.pipelines.tabular import TabularConfig, fit_tabular

from gananomaly import GANAnomalyDetector
from gananomaly.explanations import column_contributions, explain_columns, top_columns

TINY = {"epochs": 3, "hidden_dims": [16], "latent_dim": 4, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def pipe():
    cfg = TabularConfig(name="x", builtin="mixed", options={"n_samples": 300}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind", "is_anomaly"], mlflow=False, detector=TINY)
    return fit_tabular(cfg, save=False).pipeline


@pytest.fixture(scope="module")
def features():
    return mixed_table(40, random_state=3).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])


def test_top_columns_follow_the_long_ranking_per_input_column(pipe, features):
    top = top_columns(pipe, features, 3)
    assert list(top.columns) == [f"explain_{i}_{w}" for i in (1, 2, 3) for w in ("column", "contribution")]
    assert list(top.index) == list(range(len(features)))
    long = explain_columns(pipe, features)
    for i in (1, 2, 3):
        ranked = long[long["rank"] == i].set_index("row")
        assert list(top[f"explain_{i}_column"]) == list(ranked["column"])
        np.testing.assert_allclose(top[f"explain_{i}_contribution"], ranked["contribution"])
    assert (top["explain_1_contribution"] >= top["explain_2_contribution"]).all()
    # a categorical column's one-hot group is summed: "device" is one column, never "device_pos"
    wide = column_contributions(pipe, features)
    assert set(wide.columns) == set(features.columns)
    np.testing.assert_allclose(wide.max(axis=1), top["explain_1_contribution"])


def test_top_columns_refuses_a_k_beyond_the_columns(pipe, features):
    with pytest.raises(ValueError, match=r"k=9 .*\(8\)"):
        top_columns(pipe, features, 9)
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_columns(pipe, features, 0)


def test_top_columns_of_a_bare_detector_rank_its_features():
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(200, 4), columns=["a", "b", "c", "d"])
    det = GANAnomalyDetector(**TINY).fit(X)
    Xs = X.iloc[:20].copy()
    Xs["c"] += 8.0  # a break in one known column
    top = top_columns(det, Xs, 2)
    assert (top["explain_1_column"] == "c").mean() >= 0.9  # a random ranking: 0.25
    long = det.explain(Xs, top=1)
    assert list(top["explain_1_column"]) == list(long["feature"])
    # a row's contributions have the same bits alone or in any batch (they moved by about 1e-4
    # with the batch size, enough to flip near-tied ranks)
    alone = det.explain(Xs.iloc[[5]]).sort_values("feature")["contribution"].to_numpy()
    batch = det.explain(Xs)
    np.testing.assert_array_equal(alone, batch[batch["row"] == 5].sort_values("feature")["contribution"].to_numpy())


def test_columns_named_like_positions_are_explained_by_name():
    # a frame whose columns are called x2, x0, x1: "x1" is the third column, not position 1
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(200, 3), columns=["x2", "x0", "x1"])
    det = GANAnomalyDetector(**TINY).fit(X)
    Xs = X.iloc[:10].copy()
    Xs["x2"] += 50.0
    top = top_columns(det, Xs, 1)
    assert list(top["explain_1_column"]) == list(det.explain(Xs, top=1)["feature"]) == ["x2"] * 10
    assert list(column_contributions(det, Xs).idxmax(axis=1)) == ["x2"] * 10


@pytest.mark.parametrize("top", [0, -1, 2.5, True])
def test_explain_columns_refuses_a_top_that_is_not_a_positive_int(pipe, features, top):
    with pytest.raises(ValueError, match="top must be a positive int"):
        explain_columns(pipe, features, top=top)
