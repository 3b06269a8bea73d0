"""explain_tabular: contributions per original column through the tabular pipeline."""

import numpy as np
import pytest
from gananomaly.pipelines.datasets import mixed_table
from gananomaly.pipelines.tabular import TabularConfig, explain_tabular, fit_tabular

# The columns each planted anomaly kind of mixed_table breaks.
# numeric_range moves the basket size far out and the checkout duration with it (it keeps the
# normal 30 s per item, so the duration leaves its normal range as far as the basket size does).
BROKEN = {"duration_for_items": {"duration_s", "n_items"}, "category_combination": {"channel", "device"},
          "numeric_range": {"customer_age", "n_items", "duration_s"}, "amount_range": {"amount", "tier"}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    cfg = TabularConfig(name="e", builtin="mixed", options={"n_samples": 2000}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", mlflow=False,
                        detector={"random_state": 0})
    return fit_tabular(cfg, output_dir=tmp_path_factory.mktemp("explain")).pipeline


def test_the_broken_column_ranks_first_per_anomaly_kind(fitted):
    """Each anomaly of the mixed table breaks one known rule; the column ranked first is one
    of the rule's columns for >= 80 % of the rows of every kind, and one of the first two for
    >= 90 % (one-hot groups summed: a categorical column counts once)."""
    # 180 anomalies per kind: the rates then vary by about 0.02 between samples (45 rows: about 0.04)
    df = mixed_table(2400, contamination=0.3, random_state=5)
    features = df.drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    out = explain_tabular(fitted, features)
    assert (out.groupby("row")["column"].nunique() == features.shape[1]).all()  # every column once per row
    first = out[out["rank"] == 1].set_index("row")["column"]
    top2 = out[out["rank"] <= 2].groupby("row")["column"].apply(set)
    rates, rates2 = {}, {}
    for kind, cols in BROKEN.items():
        rows = np.flatnonzero(df["anomaly_kind"].to_numpy() == kind)
        rates[kind] = float(np.mean([first[r] in cols for r in rows]))
        rates2[kind] = float(np.mean([bool(top2[r] & cols) for r in rows]))
    print(rates, rates2)
    assert min(rates.values()) >= 0.8, rates
    assert min(rates2.values()) >= 0.9, rates2


def test_expected_values_imputed_flags_and_top(fitted):
    df = mixed_table(50, random_state=7).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    df.loc[3, "customer_age"] = np.nan
    out = explain_tabular(fitted, df, top=3)
    assert out.groupby("row").size().max() == 3 and list(out["rank"].iloc[:3]) == [1, 2, 3]
    full = explain_tabular(fitted, df)
    age = full[full["column"] == "customer_age"].set_index("row")
    assert age.loc[3, "imputed"]
    np.testing.assert_array_equal(age["imputed"].to_numpy(), df["customer_age"].isna().to_numpy()[age.index])
    device = full[full["column"] == "device"]
    assert set(device["expected"]) <= {"desktop", "mobile", "pos"}  # a category, not a number
    # normal rows: the model expects the device their channel implies for most of them
    rule = {"web": "desktop", "app": "mobile", "store": "pos"}
    rows = device["row"].to_numpy()
    assert np.mean(device["expected"].to_numpy() == df["channel"].map(rule).to_numpy()[rows]) >= 0.8
    amount = full[full["column"] == "amount"]
    expected, value = amount["expected"].astype(float), amount["value"].astype(float)
    assert np.isfinite(expected).all() and value.min() / 2 < expected.min() and expected.max() < 2 * value.max()
    assert np.corrcoef(expected, value)[0, 1] > 0.2  # in the column's units, following the row
    # the input's index labels beside the positions: the explanations join onto the input (and
    # onto score_tabular's output, which keeps that index)
    relabelled = explain_tabular(fitted, df.set_axis(np.arange(100, 150) * 3), top=1)
    assert list(relabelled["index"]) == [100 * 3 + 3 * r for r in relabelled["row"]]
    with pytest.raises(TypeError, match="tabular pipeline"):
        explain_tabular(fitted[-1], df)
    blank = df.astype({"amount": object})
    blank.loc[5, "amount"] = "  "  # blank text: read as missing and imputed, so flagged as imputed
    flagged = explain_tabular(fitted, blank)
    assert flagged[(flagged["column"] == "amount") & (flagged["row"] == 5)]["imputed"].item()
    empty = explain_tabular(fitted, df.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
    with pytest.raises(TypeError, match="needs a DataFrame"):
        explain_tabular(fitted, df.to_numpy())


def test_expected_values_are_in_the_inputs_units_for_a_pipeline_of_ones_own(fitted):
    """Only the tabular pipeline's own layout was mapped back; any other gave the model's
    scaled units (about 0 for an amount of 7,000) as if they were amounts."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gananomaly import GANAnomalyDetector
    from gananomaly.explanations import explain_columns

    rng = np.random.RandomState(0)
    X = 5000 + 800 * rng.randn(300, 3)
    import pandas as pd

    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(epochs=2, validation_fraction=0, random_state=0))
    pipe.fit(frame)
    out = explain_columns(pipe, frame.iloc[:20])
    assert out["expected"].astype(float).between(2000, 8000).all()
