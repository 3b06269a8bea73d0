"""The gananomaly MLflow flavor: save/log/load, pyfunc output, registry aliases, bad URIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import gananomaly.mlflow as gm
from gananomaly import GANAnomalyDetector, __version__

COLS = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(160, 4)
    X_test = np.vstack([rng.randn(20, 4), 6 + rng.randn(5, 4)])
    return X, X_test


@pytest.fixture(scope="module")
def detector(data):
    return GANAnomalyDetector(epochs=3, hidden_dims=(16,), random_state=0).fit(data[0])


@pytest.fixture(scope="module")
def other_detector(data):
    """A second, different model (another seed), swapped in under a saved one by the tests."""
    return GANAnomalyDetector(epochs=2, encoder_epochs=2, hidden_dims=(16,), random_state=1).fit(data[0])


@pytest.fixture(scope="module")
def pipeline(data):
    pipe = Pipeline([("scale", StandardScaler()), ("gan", GANAnomalyDetector(epochs=3, hidden_dims=(16,),
                                                                             random_state=0))])
    return pipe.fit(pd.DataFrame(data[0], columns=COLS))


@pytest.fixture(scope="module")
def mixed_pipeline(tmp_path_factory):
    """The tabular job's pipeline on the mixed table (numbers and categories), briefly trained."""
    from gananomaly.pipelines.tabular import TabularConfig, fit_tabular

    cfg = TabularConfig(name="u", builtin="mixed", options={"n_samples": 300}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", mlflow=False,
                        detector={"epochs": 2, "encoder_epochs": 2, "hidden_dims": (16,), "random_state": 0})
    return fit_tabular(cfg, output_dir=tmp_path_factory.mktemp("mixed")).pipeline


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module; the module runs in its directory so artifacts land there."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield f"sqlite:///{root}/mlflow.db"


@pytest.fixture
def tracking(store, monkeypatch, tmp_path):
    """Point MLflow at the temp store for one test (artifacts under tmp_path), then reset."""
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(store)
    yield store
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_save_model_layout_has_no_pickles(detector, data, tmp_path):
    path = tmp_path / "m"
    gm.save_model(detector, path, input_example=data[0][:3])
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {"MLmodel", "model/config.json", "model/model.safetensors", "requirements.txt",
            "python_env.yaml", "conda.yaml"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle", ".joblib"))]
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "gananomaly.mlflow"
    assert mlmodel["flavors"]["gananomaly"]["gananomaly_version"] == __version__
    reqs = (path / "requirements.txt").read_text().splitlines()
    assert f"gananomaly=={__version__}" in reqs
    assert any(r.startswith("torch") for r in reqs) and any(r.startswith("safetensors") for r in reqs)


def test_save_model_refuses_existing_nonempty_path(detector, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(MlflowException, match="already exists"):
        gm.save_model(detector, tmp_path / "m")
    assert (tmp_path / "m" / "keep.txt").read_text() == "x"


def test_save_model_rejects_other_estimators(tmp_path):
    with pytest.raises(TypeError, match="GANAnomalyDetector"):
        gm.save_model(StandardScaler().fit(np.eye(3)), tmp_path / "m")


def test_load_model_round_trip(detector, data, tmp_path):
    gm.save_model(detector, tmp_path / "m")
    loaded = gm.load_model(str(tmp_path / "m"))
    assert isinstance(loaded, GANAnomalyDetector)
    np.testing.assert_allclose(loaded.score_samples(data[1]), detector.score_samples(data[1]), atol=1e-9)
    assert loaded.get_params()["hidden_dims"] == (16,)


def test_pyfunc_predict_matches_estimator(detector, data, tmp_path):
    gm.save_model(detector, tmp_path / "m", input_example=data[0][:3])
    pf = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    out = pf.predict(pd.DataFrame(data[1]))
    assert list(out.columns) == ["discriminator", "reconstruction", "latent", "knn", "combined", "score", "label"]
    comps = detector.score_components(data[1])
    for col in ("discriminator", "reconstruction", "latent", "knn", "combined"):
        np.testing.assert_allclose(out[col].to_numpy(), comps[col].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(out["score"].to_numpy(), detector.score_samples(data[1]), atol=1e-9)
    np.testing.assert_array_equal(out["label"].to_numpy(), detector.predict(data[1]))
    assert set(out["label"]) <= {-1, 1} and (out["label"] == -1).any()
    # A numpy input gives the same answer.
    np.testing.assert_allclose(pf.predict(data[1])["score"].to_numpy(), out["score"].to_numpy(), atol=0)
    sig = pf.metadata.signature
    assert sig.outputs.input_names() == ["discriminator", "reconstruction", "latent", "knn", "combined", "score",
                                         "label"]


def test_pyfunc_pipeline_uses_feature_names(pipeline, data, tmp_path):
    frame = pd.DataFrame(data[1], columns=COLS)
    gm.save_model(pipeline, tmp_path / "p", input_example=frame.iloc[:2])
    assert (tmp_path / "p" / "model" / "preprocessing.skops").is_file()
    pf = mlflow.pyfunc.load_model(str(tmp_path / "p"))
    assert pf.metadata.signature.inputs.input_names() == COLS
    shuffled = frame[["d", "c", "b", "a"]]  # columns are matched by name, not position
    np.testing.assert_allclose(pf.predict(shuffled)["score"].to_numpy(), pipeline.score_samples(frame), atol=1e-9)
    assert pf.metadata.load_input_example(str(tmp_path / "p")).shape == (2, 4)
    assert isinstance(gm.load_model(str(tmp_path / "p")), Pipeline)


def test_log_model_gives_logged_model_uri(detector, data, tracking):
    with mlflow.start_run() as run:
        info = gm.log_model(detector, name="det", input_example=data[0][:2])
    assert info.model_uri == f"models:/{info.model_id}"
    logged = mlflow.get_logged_model(info.model_id)
    assert logged.source_run_id == run.info.run_id and logged.name == "det"
    loaded = gm.load_model(info.model_uri)
    np.testing.assert_allclose(loaded.score_samples(data[1]), detector.score_samples(data[1]), atol=1e-9)


def test_registry_alias_champion(detector, data, tracking):
    name = "gan-detector"
    with mlflow.start_run():
        info = gm.log_model(detector, registered_model_name=name, input_example=data[0][:2])
    client = MlflowClient()
    version = info.registered_model_version
    assert version is not None
    client.set_registered_model_alias(name, "champion", str(version))
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(version)
    pf = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    np.testing.assert_allclose(pf.predict(pd.DataFrame(data[1]))["score"].to_numpy(),
                               detector.score_samples(data[1]), atol=1e-9)
    native = gm.load_model(f"models:/{name}@champion")
    np.testing.assert_array_equal(native.predict(data[1]), detector.predict(data[1]))


# ---------------------------------------------------------------------------------- bad URIs
def test_load_missing_local_path_names_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(MlflowException, match="nowhere"):
        gm.load_model(missing)


def test_load_missing_logged_model_names_uri(tracking):
    with pytest.raises(MlflowException, match="models:/m-0000"):
        gm.load_model("models:/m-0000")
    with pytest.raises(MlflowException, match="models:/no-such-model@champion"):
        gm.load_model("models:/no-such-model@champion")


def test_load_non_gananomaly_model_is_refused(tmp_path):
    import mlflow.sklearn

    path = tmp_path / "sk"
    mlflow.sklearn.save_model(StandardScaler().fit(np.eye(3)), path, serialization_format="skops",
                              skops_trusted_types=[], pip_requirements=["scikit-learn"])
    with pytest.raises(MlflowException, match=r"sk.*not 'gananomaly'"):
        gm.load_model(str(path))


def test_a_flavor_entry_that_is_no_mapping_is_refused_with_mlflows_error(tmp_path):
    """'flavors: {gananomaly: hello}' failed with AttributeError: 'str' object has no attribute 'get'."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text("flavors:\n  gananomaly: hello\n")
    with pytest.raises(MlflowException, match=r"flavor 'gananomaly' is a str, not a mapping"):
        gm.load_model(str(tmp_path / "m"))


def test_load_plain_directory_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(MlflowException, match="not an MLflow model"):
        gm.load_model(str(tmp_path / "junk"))


def test_load_corrupt_weights_is_refused(detector, tmp_path):
    gm.save_model(detector, tmp_path / "m")
    Path(tmp_path / "m" / "model" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(MlflowException, match="corrupt model.safetensors"):
        gm.load_model(str(tmp_path / "m"))


# ------------------------------------------------------------------------- hostile MLmodel files
def _edit_mlmodel(path: Path, edit) -> None:
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    edit(mlmodel["flavors"])
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_data_outside_the_model_directory_is_refused(detector, other_detector, tmp_path, where):
    """An MLmodel whose ``data`` points elsewhere on disk must not load the model found there."""
    victim = tmp_path / "elsewhere" / "model"
    victim.parent.mkdir()
    other_detector.save(victim)
    path = tmp_path / "a" / "b" / "m"
    gm.save_model(detector, path)
    if where == "symlink":
        os.symlink(victim, path / "link")
        data_entry = "link"
    else:
        data_entry = str(victim) if where == "absolute" else "../../../elsewhere/model"

    def point(flavors):
        flavors["gananomaly"]["data"] = data_entry
        flavors["python_function"]["data"] = data_entry

    _edit_mlmodel(path, point)
    with pytest.raises(MlflowException, match="'data'.*(relative path|leads outside)"):
        gm.load_model(str(path))
    # mlflow.pyfunc passes only the data path: the MLflow model above it must name it as its own
    with pytest.raises((MlflowException, ValueError), match="no MLmodel file|leads outside"):
        mlflow.pyfunc.load_model(str(path))


def test_flavor_records_and_checks_the_weights_digest(detector, other_detector, tmp_path):
    gm.save_model(detector, tmp_path / "m")
    conf = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())["flavors"]["gananomaly"]
    config = json.loads((tmp_path / "m" / "model" / "config.json").read_text())
    assert conf["weights_sha256"] == config["weights_sha256"]
    # another (whole, self-consistent) model swapped in under the logged one is refused
    other_detector.save(tmp_path / "m" / "model")
    with pytest.raises(MlflowException, match="weights_sha256.*checksum mismatch"):
        gm.load_model(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="weights_sha256.*checksum mismatch"):
        mlflow.pyfunc.load_model(str(tmp_path / "m"))


def test_a_flipped_bit_in_logged_weights_is_refused(detector, tmp_path):
    gm.save_model(detector, tmp_path / "m")
    weights = tmp_path / "m" / "model" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x02
    weights.write_bytes(bytes(raw))
    with pytest.raises(MlflowException, match="checksum mismatch"):
        gm.load_model(str(tmp_path / "m"))


@pytest.mark.parametrize("key,value,match", [("format", "pickle", "'format'"),
                                             ("model_kind", "pipeline", "'model_kind'")])
def test_flavor_fields_must_match_the_model(detector, tmp_path, key, value, match):
    gm.save_model(detector, tmp_path / "m")
    _edit_mlmodel(tmp_path / "m", lambda flavors: flavors["gananomaly"].update({key: value}))
    with pytest.raises(MlflowException, match=match):
        gm.load_model(str(tmp_path / "m"))


def test_a_bare_detectors_pyfunc_counts_bad_rows_from_1(detector, data, tmp_path):
    """The README says served rows are named counting from 1 (as a pipeline's are); a bare
    detector's pyfunc said 'row index 2' for the third row."""
    gm.save_model(detector, tmp_path / "m")
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    X = data[1][:4].copy()
    X[2, 3] = np.nan
    for request in (X, pd.DataFrame(X, index=[10, 20, 30, 40])):
        with pytest.raises(MlflowException, match=r"missing \(NaN\) values: column '?3'?: row 3 \(counted from 1\)"):
            model.predict(request)
    np.testing.assert_allclose(model.predict(data[1][:4])["score"], detector.score_samples(data[1][:4]))


def test_pyfunc_bad_input_is_an_invalid_parameter_error_with_our_message(pipeline, data, tmp_path):
    """A model server answers MLflow's invalid-parameter errors with HTTP 400 and their
    message; a plain ValueError became a generic "unexpected error" for the client."""
    from mlflow.exceptions import MlflowException

    path = tmp_path / "m"
    gm.save_model(pipeline, path)
    model = mlflow.pyfunc.load_model(str(path))
    frame = pd.DataFrame(data[1], columns=COLS)
    with pytest.raises(MlflowException, match=f"missing the columns \\['{COLS[0]}'\\]") as info:
        model.predict(frame.drop(columns=[COLS[0]]))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="missing \\(NaN\\) values") as info:
        model.predict(frame.assign(**{COLS[1]: np.nan}))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    # a pipeline that fills in nothing names the input's column and counts rows from 1 (it
    # passed the value on: "column 1: row indices 2")
    holed = frame.copy()
    holed.iloc[2, 1] = np.nan
    with pytest.raises(MlflowException, match=f"column '{COLS[1]}': row 3 \\(counted from 1\\)"):
        model.predict(holed)


def test_signature_requires_every_training_column_even_with_nan_in_the_example(pipeline, data, tmp_path):
    example = pd.DataFrame(data[0][:3], columns=COLS)
    example.iloc[0, 1] = np.nan  # the tabular pipeline imputes; the column is still required
    from sklearn.base import clone
    from sklearn.impute import SimpleImputer

    imputing = Pipeline([("impute", SimpleImputer()), *clone(pipeline).steps]).fit(pd.DataFrame(data[0], columns=COLS))
    gm.save_model(imputing, tmp_path / "m", input_example=example)
    inputs = mlflow.models.Model.load(str(tmp_path / "m")).signature.inputs
    assert [c.name for c in inputs.inputs] == list(COLS) and all(c.required for c in inputs.inputs)


def test_serving_labels_and_warns_about_unseen_categories(mixed_pipeline, tmp_path):
    """A category never seen in training is encoded as all zeros, which can look normal: the
    pyfunc labels such rows -1 and warns, as the batch job does."""
    from gananomaly.pipelines.datasets import mixed_table

    gm.save_model(mixed_pipeline, tmp_path / "m")
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    df = mixed_table(40, random_state=3).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    plain = model.predict(df)
    df.loc[[4, 9], "device"] = "smartwatch"
    with pytest.warns(UserWarning, match=r"2 row\(s\) hold categories never seen.*'device': 2 row\(s\)"):
        out = model.predict(df)
    assert list(out["label"].iloc[[4, 9]]) == [-1, -1]
    others = [i for i in range(len(df)) if i not in (4, 9)]
    np.testing.assert_array_equal(out["label"].iloc[others], plain["label"].iloc[others])


def test_pyfunc_reads_awkward_frames_as_the_batch_job_does(mixed_pipeline, tmp_path):
    """A repeated index label, no rows, a blank number; and a failed save leaves nothing."""
    from gananomaly.pipelines.datasets import mixed_table

    df = mixed_table(40, random_state=3).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    with pytest.raises(ValueError, match="input_example"):  # named, and no half-written directory left
        gm.save_model(mixed_pipeline, tmp_path / "m", input_example=df.iloc[:2].rename(columns={"amount": "zz"}))
    assert not (tmp_path / "m").exists()
    gm.save_model(mixed_pipeline, tmp_path / "m")  # the retry works
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    plain = model.predict(df)
    pair = df.iloc[[4, 0]].set_axis([7, 7]).assign(device=["smartwatch", df["device"].iloc[0]])
    with pytest.warns(UserWarning, match="never seen"):
        assert list(model.predict(pair)["label"]) == [-1, plain["label"].iloc[0]]  # not both rows labelled 7
    empty = model.predict(df.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == list(plain.columns)
    blank = df.astype({"amount": object})
    blank.loc[2, "amount"] = " "
    missing = df.copy()
    missing.loc[2, "amount"] = np.nan
    np.testing.assert_array_equal(model.predict(blank)["score"], model.predict(missing)["score"])


def test_pyfunc_reads_integer_category_codes_as_the_categories_they_are(tmp_path):
    """Categories fitted as text ("1", "2", "3"): integer codes at scoring time are those
    categories (they were all-zero one-hot rows: silently wrong scores, no warning)."""
    from gananomaly.pipelines.tabular import TabularConfig, fit_tabular, score_tabular

    rng = np.random.RandomState(0)
    df = pd.DataFrame({"x1": rng.randn(120), "store": rng.choice([1, 2, 3], 120)})
    cfg = TabularConfig(name="codes", path="unused.csv", numeric_columns=["x1"], categorical_columns=["store"],
                        mlflow=False, detector={"epochs": 1, "encoder_epochs": 1, "hidden_dims": (8,),
                                                "random_state": 0, "validation_fraction": 0})
    pipe = fit_tabular(cfg, df, save=False).pipeline
    gm.save_model(pipe, tmp_path / "m")
    out = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(df.iloc[:6])
    np.testing.assert_allclose(out["score"], score_tabular(pipe, df.iloc[:6])["score"], rtol=1e-9)


def test_integer_and_float_numbers_are_accepted_with_a_signature(mixed_pipeline, tmp_path):
    """The mixed table's own int64 column (n_items) and float versions of every numeric column
    pass the logged signature (MLflow refused int64 for double and floats for long)."""
    from gananomaly.pipelines.datasets import mixed_table

    df = mixed_table(40, random_state=3).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    gm.save_model(mixed_pipeline, tmp_path / "m", input_example=df.iloc[:3])
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    ref = model.predict(df)["score"].to_numpy()
    as_int = df.astype({"amount": "float64"}).round().astype({"amount": "int64"})
    for variant in (df.astype({"n_items": "float64"}), as_int, df.astype({"n_items": str})):
        out = model.predict(variant)
        assert np.isfinite(out["score"]).all() and len(out) == len(df)
    np.testing.assert_allclose(model.predict(df.astype({"n_items": "float64"}))["score"], ref, rtol=1e-9)
    with pytest.raises(Exception, match=r"column 'amount' holds values that are no finite numbers in rows \[1, 2"):
        model.predict(df.astype({"amount": "object"}).assign(amount="lots"))
    text_inf = df.astype({"amount": "object"})
    text_inf.loc[3, "amount"] = "inf"  # text that parses to a number, but not a finite one
    with pytest.raises(Exception, match=r"column 'amount' holds values that are no finite numbers in rows \[4\]"):
        model.predict(text_inf)
    both = df.copy()  # float infinity (was scikit-learn's error naming no column) in two columns at once
    both.loc[5, "amount"] = np.inf
    both.loc[[1, 2], "duration_s"] = -np.inf
    with pytest.raises(Exception, match=r"column 'amount' holds values that are no finite numbers in rows \[6\] .*; "
                                        r"column 'duration_s' holds .* in rows \[2, 3\]"):
        model.predict(both)



def test_model_directory_has_a_model_card(pipeline, tmp_path):
    gm.save_model(pipeline, tmp_path / "m")
    card = (tmp_path / "m" / gm.MODEL_CARD).read_text()
    det = pipeline[-1]
    assert card.startswith("# gananomaly model") and all(f"`{c}`" in card for c in COLS)
    assert f"{det.offset_:.6g}" in card and "fidelity" in card and "a scikit-learn pipeline" in card


EXPLAINED = ["explain_1_column", "explain_1_contribution", "explain_2_column", "explain_2_contribution"]


def test_pyfunc_explains_the_top_features_of_a_detector_on_request(detector, data, tmp_path):
    """params={"explain": K} adds each row's top-K features; the signature declares the param, so
    serving accepts it; a bad K is MLflow's invalid-parameter error."""
    gm.save_model(detector, tmp_path / "m", input_example=data[0][:3])
    assert [p.name for p in mlflow.models.Model.load(str(tmp_path / "m")).signature.params.params] == ["explain"]
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    broken = np.random.RandomState(1).randn(10, 4)
    broken[:, 2] = 8.0  # the planted break: feature 2 far outside its training range
    plain = model.predict(broken)
    out = model.predict(broken, params={"explain": 2})
    assert list(plain.columns) == list(gm.OUTPUT_COLUMNS)
    assert list(out.columns) == list(gm.OUTPUT_COLUMNS) + EXPLAINED
    pd.testing.assert_frame_equal(out[plain.columns], plain)
    assert (out["explain_1_column"] == "x2").all(), out["explain_1_column"].tolist()
    assert (out["explain_1_contribution"] >= out["explain_2_contribution"]).all()
    for bad in (0, -1):
        with pytest.raises(MlflowException, match=r"gananomaly: params\['explain'\] must be a positive int"):
            model.predict(broken, params={"explain": bad})
    with pytest.raises(MlflowException, match="explain") as info:
        model.predict(broken, params={"explain": "two"})
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_pyfunc_explains_original_columns_of_a_table_pipeline(mixed_pipeline, tmp_path):
    """For the tabular job's pipeline the explanations name input columns (one-hot groups summed):
    rows whose amount is broken name ``amount`` first."""
    from gananomaly.pipelines.datasets import mixed_table

    df = mixed_table(40, random_state=3).drop(columns=["order_id", "is_anomaly", "anomaly_kind"])
    gm.save_model(mixed_pipeline, tmp_path / "m", input_example=df.iloc[:3])
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    out = model.predict(df.assign(amount=df["amount"] * 50), params={"explain": 2})
    assert list(out.columns[-4:]) == EXPLAINED
    assert (out["explain_1_column"] == "amount").all(), out["explain_1_column"].value_counts()
    assert set(out["explain_2_column"]) <= set(df.columns) - {"amount"}


def test_a_detector_fitted_with_a_context_is_not_saved_for_a_pyfunc_that_could_never_score_it(tmp_path):
    """Logged and registered fine, then every predict failed ("pass context="), which the
    pyfunc cannot. Refused at the save, naming the way that works; nothing written."""
    from gananomaly import GANAnomalyDetector

    rng = np.random.RandomState(0)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0)
    det.fit(rng.randn(80, 3), context=np.where(rng.rand(80) > 0.5, "a", "b"))
    with pytest.raises(ValueError, match=r"fitted with an unnamed context.*det\.save\(path\)"):
        gm.save_model(det, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    # logging is refused before MLflow records anything (a FAILED LoggedModel was left behind)
    # (an explicit experiment id: mlflow.set_experiment would leave a process-wide active experiment
    # that another store has not got)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        exp_id = MlflowClient().create_experiment("conditional")
        with mlflow.start_run(experiment_id=exp_id):
            with pytest.raises(ValueError, match=r"fitted with an unnamed context"):
                gm.log_model(det, name="model", registered_model_name="cond")
        assert MlflowClient().search_logged_models(experiment_ids=[exp_id]) == []
    finally:
        mlflow.set_tracking_uri(None)


def test_an_image_model_takes_every_image_layout_and_pixel_dtype(tmp_path):
    """The inferred tensor signature held the example's exact dtype and rank: float64 pixels
    (numpy's default), uint8, or (n, 1, H, W) for an (n, H, W) example were refused by MLflow
    with the data printed whole. The model now declares outputs only and scores every layout
    the detector takes, to the same numbers; a wrong size is our one-line error."""
    rng = np.random.RandomState(0)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0, validation_fraction=0).fit(
        rng.rand(32, 8, 8).astype(np.float32))
    X = rng.rand(4, 8, 8).astype(np.float32)
    gm.save_model(det, str(tmp_path / "m"), input_example=X[:2])
    pf = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert pf.metadata.signature.inputs is None and "score" in pf.metadata.signature.outputs.input_names()
    expected = det.score_samples(X)
    for layout in (X, X.astype(np.float64), X[:, None], X[..., None], X.tolist()):
        np.testing.assert_allclose(pf.predict(layout)["score"].to_numpy(), expected, rtol=1e-6)
    with pytest.warns(UserWarning, match="pixel"):
        assert len(pf.predict((X * 255).astype(np.uint8))) == 4  # scored, with the range warning
    with pytest.raises(MlflowException, match=r"gananomaly: .*images of 4x4 pixels"):
        pf.predict(rng.rand(2, 4, 4))


def test_a_bare_detectors_pyfunc_reads_numbers_sent_as_text(data, tmp_path):
    """JSON clients send numbers as text: the module docstring says predict converts them, but a
    bare detector fitted on named columns refused every such column as non-numeric."""
    frame = pd.DataFrame(data[0], columns=COLS)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, hidden_dims=(16,), random_state=0).fit(frame)
    gm.save_model(det, tmp_path / "m")
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    test = pd.DataFrame(data[1], columns=COLS)
    np.testing.assert_allclose(model.predict(test.astype(str))["score"], det.score_samples(test), rtol=1e-6)
    bad = test.astype(str)
    bad.iloc[2, 1] = "12,5"
    with pytest.raises(MlflowException, match=rf"column '{COLS[1]}' holds values that are no finite numbers in rows "
                                              r"\[3\] \(counted from 1; e\.g\. '12,5'\)"):
        model.predict(bad)
