"""Pipelines users build themselves (not by `gananomaly tabular fit`): one-hot encoders fitted on
numbers, dropped or grouped categories, several scalers, a numeric column named like a one-hot
feature. Scores and explanations must be those of the rows given, never of other rows."""

import warnings

import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.tabular import explain_tabular, score_tabular
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from gananomaly import GANAnomalyDetector

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fit(df, *parts):
    pipe = Pipeline([("preprocess", ColumnTransformer(list(parts))),
                     ("detector", GANAnomalyDetector(epochs=3, encoder_epochs=3, random_state=0))])
    return pipe.fit(df)


def _ohe(**options):
    return OneHotEncoder(handle_unknown="ignore", sparse_output=False, **options)


def _per_feature(pipe, X) -> pd.DataFrame:
    """The detector's own explanation of the rows, features named as the preprocessing names them."""
    names = list(pipe[:-1].get_feature_names_out())
    long = pipe[-1].explain(pipe[:-1].transform(X))
    long["feature"] = [names[int(f[1:])] for f in long["feature"]]
    return long


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_categories_fitted_as_numbers_are_scored_and_explained_as_given(rng):
    """An encoder fitted on the integers 1, 2, 3 read the text "2" as an unseen category: every
    row was scored and explained as all-zero one-hot (scores near -35 instead of about 1)."""
    df = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(10, 2, 200), "cat": rng.choice([1, 2, 3], 200)})
    pipe = _fit(df, ("numeric", StandardScaler(), ["a", "b"]), ("categorical", _ohe(), ["cat"]))
    X = df.iloc[:6]
    got = score_tabular(pipe, X)
    np.testing.assert_allclose(got["score"], pipe.score_samples(X), rtol=1e-12)
    np.testing.assert_array_equal(got["label"], pipe.predict(X))
    # the same categories read from a CSV as text or as floats with gaps score the same
    as_text = score_tabular(pipe, X.assign(cat=X["cat"].astype(str)))
    np.testing.assert_allclose(as_text["score"], got["score"], rtol=1e-12)
    as_float = score_tabular(pipe, X.assign(cat=X["cat"].astype(float)))
    np.testing.assert_allclose(as_float["score"], got["score"], rtol=1e-12)
    # an unseen number stays unseen: labelled an outlier, as a text category never seen is
    assert (score_tabular(pipe, X.assign(cat=99))["label"] == -1).all()
    assert (score_tabular(pipe, X.assign(cat="nine"))["label"] == -1).all()
    # the explanation is of the rows given: the one-hot group's contributions summed
    own = _per_feature(pipe, X)
    group = own[own["feature"].str.startswith("categorical__cat_")].groupby("row")["contribution"].sum()
    explained = explain_tabular(pipe, X).query("column == 'cat'").set_index("row")["contribution"]
    np.testing.assert_allclose(explained.sort_index(), group.sort_index(), rtol=1e-9)


def test_a_feature_is_credited_to_the_column_of_the_transformer_that_made_it(rng):
    """A numeric column `plan_pro` beside the category `pro` of a column `plan`: the one-hot
    feature `categorical__plan_pro` was credited to the numeric column."""
    df = pd.DataFrame({"b": rng.normal(10, 2, 200), "plan_pro": rng.normal(0, 1, 200),
                       "plan": rng.choice(["basic", "pro"], 200)})
    pipe = _fit(df, ("numeric", StandardScaler(), ["b", "plan_pro"]), ("categorical", _ohe(), ["plan"]))
    X = df.iloc[:5]
    own = _per_feature(pipe, X)
    explained = explain_tabular(pipe, X)
    for column, features in (("plan_pro", ["numeric__plan_pro"]),
                             ("plan", ["categorical__plan_basic", "categorical__plan_pro"])):
        expected = own[own["feature"].isin(features)].groupby("row")["contribution"].sum().sort_index()
        got = explained[explained["column"] == column].set_index("row")["contribution"].sort_index()
        np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert np.isfinite(explained[explained["column"].isin(["b", "plan_pro"])]["expected"].astype(float)).all()


def test_the_expected_category_counts_a_dropped_category_and_names_an_infrequent_group(rng):
    """drop="if_binary" leaves one feature for a two-category column: the expected category was
    always the kept one. Grouped infrequent categories were named by scikit-learn's internal label."""
    df = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(10, 2, 200),
                       "plan": rng.choice(["basic", "pro"], 200, p=[0.8, 0.2]),
                       "cat": rng.choice(["x", "y", "z"], 200, p=[0.4, 0.3, 0.3])})
    pipe = _fit(df, ("numeric", StandardScaler(), ["a", "b"]), ("plan", _ohe(drop="if_binary"), ["plan"]),
                ("cat", _ohe(max_categories=2), ["cat"]))
    X = df.iloc[:12]
    own = _per_feature(pipe, X)
    pro = own[own["feature"] == "plan__plan_pro"].set_index("row")["expected"].sort_index()
    want = np.where(pro.to_numpy() > 0.5, "pro", "basic")
    explained = explain_tabular(pipe, X)
    got = explained[explained["column"] == "plan"].set_index("row")["expected"].sort_index()
    np.testing.assert_array_equal(got.to_numpy(), want)
    assert "basic" in set(want)  # the model expects the dropped category for some rows here
    cats = set(explained.loc[explained["column"] == "cat", "expected"])
    infrequent = pipe[0].named_transformers_["cat"].infrequent_categories_[0]
    group = f"(infrequent: {', '.join(infrequent)})"
    assert cats <= {"x", "y", "z", group} and not any("sklearn" in c for c in cats)


def test_numeric_columns_of_several_scalers_are_each_given_back_in_their_units(rng):
    """A StandardScaler on two columns and a MinMaxScaler on a third: every expected value was
    NaN because no single transformer held all the numeric columns."""
    df = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(10, 2, 200), "c": rng.normal(-5, 0.5, 200),
                       "cat": rng.choice(["x", "y"], 200)})
    pipe = _fit(df, ("std", StandardScaler(), ["a", "b"]), ("mm", MinMaxScaler(), ["c"]),
                ("categorical", _ohe(), ["cat"]))
    X = df.iloc[:4]
    own = _per_feature(pipe, X)
    explained = explain_tabular(pipe, X)
    for name, scaler, cols in (("std", pipe[0].named_transformers_["std"], ["a", "b"]),
                               ("mm", pipe[0].named_transformers_["mm"], ["c"])):
        scaled = np.column_stack([own[own["feature"] == f"{name}__{c}"].set_index("row")["expected"].sort_index()
                                  for c in cols])
        want = scaler.inverse_transform(scaled)
        for k, c in enumerate(cols):
            got = explained[explained["column"] == c].set_index("row")["expected"].sort_index().astype(float)
            np.testing.assert_allclose(got.to_numpy(), want[:, k], rtol=1e-9)


def test_lists_or_mappings_in_a_categorical_column_are_refused_naming_it(rng):
    """A Parquet list or struct column read into a categorical column: every row was scored as the
    unseen category "['x']" and labelled an outlier."""
    df = pd.DataFrame({"a": rng.normal(0, 1, 100), "cat": rng.choice(["x", "y"], 100)})
    pipe = _fit(df, ("numeric", StandardScaler(), ["a"]), ("categorical", _ohe(), ["cat"]))
    for cells in ([["x"]] * 3, [{"k": "x"}] * 3):
        bad = pd.DataFrame({"a": [0.0, 0.1, 0.2], "cat": cells})
        with pytest.raises(ValueError, match=r"categorical column 'cat' holds lists or mappings.*row 1"):
            score_tabular(pipe, bad)


@pytest.mark.parametrize("numeric, categorical", [([0, 1], [3]), (slice(0, 2), slice(3, 4)),
                                                  ([True, True, False, False], [False, False, False, True]),
                                                  (slice("a", "b"), slice("cat", "cat"))])
def test_columns_selected_by_position_mask_or_slice_are_scored_and_explained_as_by_name(rng, numeric, categorical):
    """A column transformer selecting columns by slice failed (TypeError: 'slice' has no len()), by
    boolean mask named columns "[['a' 'b' ...]]" that no input has, and by position gave every
    numeric expected value as NaN and ignored the dropped category."""
    df = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(10, 2, 200), "unused": rng.normal(0, 1, 200),
                       "cat": rng.choice(["x", "y", "z"], 200)})
    by_name = _fit(df, ("numeric", StandardScaler(), ["a", "b"]), ("categorical", _ohe(drop="first"), ["cat"]))
    other = _fit(df, ("numeric", StandardScaler(), numeric), ("categorical", _ohe(drop="first"), categorical))
    X = df.iloc[:8]
    want = score_tabular(by_name, X)
    got = score_tabular(other, X)
    np.testing.assert_array_equal(got["score"], want["score"])
    np.testing.assert_allclose(got["score"], other.score_samples(X), rtol=1e-12)
    explained, reference = explain_tabular(other, X), explain_tabular(by_name, X)
    pd.testing.assert_frame_equal(explained, reference)
    assert np.isfinite(explained[explained["column"].isin(["a", "b"])]["expected"].astype(float)).all()


def test_served_categories_fitted_as_numbers_score_as_given_in_any_type(rng):
    """Served through the MLflow pyfunc, an encoder fitted on the numbers 1, 2, 3 got the text "2"
    as an unseen category (every row scored near -30, no warning), and 2.0 scored right but was
    reported unseen and labelled -1."""
    from gananomaly.mlflow_pyfunc import GANAnomalyPyfunc

    df = pd.DataFrame({"a": rng.normal(0, 1, 200), "b": rng.normal(10, 2, 200), "cat": rng.choice([1, 2, 3], 200)})
    pipe = _fit(df, ("numeric", StandardScaler(), ["a", "b"]), ("categorical", _ohe(), ["cat"]))
    served = GANAnomalyPyfunc(pipe)
    X = df.iloc[:6]
    want = score_tabular(pipe, X)
    for cats in (X["cat"], X["cat"].astype(float), X["cat"].astype(str)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no category is reported unseen
            got = served.predict(X.assign(cat=cats))
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
        np.testing.assert_array_equal(got["label"], want["label"])
    for unseen in (99, "nine"):
        shown = rf"column 'cat': 6 row\(s\) \(e\.g\. {unseen!r}\)"
        with pytest.warns(UserWarning, match=rf"never seen in training.*{shown}"):
            got = served.predict(X.assign(cat=unseen))
        assert (got["label"] == -1).all()
