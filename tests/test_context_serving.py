"""A context given by name in fit is read from the served table: the MLflow pyfunc (and so
``mlflow models serve`` and ``spark_udf``) scores a conditional model from one table."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score
from test_conditional import contextual_data

import gananomaly
import gananomaly.mlflow as gm
from gananomaly import GANAnomalyDetector
from gananomaly.model_format import CONFIG_NAME, RECORD_DIGEST_KEY, with_record_digest

COLUMNS = ["s0", "s1", "s2", "s3"]


@pytest.fixture(scope="module")
def data():
    X, ctx, X_test, ctx_test, y = contextual_data()
    return pd.DataFrame(X, columns=COLUMNS), ctx, pd.DataFrame(X_test, columns=COLUMNS), ctx_test, y


@pytest.fixture(scope="module")
def served(data, tmp_path_factory):
    X, ctx, X_test, ctx_test, _ = data
    det = GANAnomalyDetector(epochs=20, random_state=0).fit(X, context=pd.Series(ctx, name="machine"))
    path = tmp_path_factory.mktemp("served") / "m"
    gm.save_model(det, path, input_example=X_test.assign(machine=ctx_test).head(3))
    return det, path


def test_the_served_table_carries_the_context_and_scores_as_the_estimator(data, served):
    X, _, X_test, ctx_test, y = data
    det, path = served
    assert det.context_names_ == ["machine"]
    model = mlflow.pyfunc.load_model(str(path))
    table = X_test.assign(machine=ctx_test)
    out = model.predict(table, params={"explain": 2})
    np.testing.assert_array_equal(out["score"].to_numpy(), det.score_samples(X_test, context=ctx_test))
    np.testing.assert_array_equal(out["label"].to_numpy(), det.predict(X_test, context=ctx_test))
    # each reading is normal for *some* machine: only its own machine's context finds the anomalies
    assert roc_auc_score(y, -out["score"]) >= 0.9
    swapped = model.predict(table.assign(machine=np.where(ctx_test == "A", "B", "A")))
    assert roc_auc_score(y, -swapped["score"]) <= 0.2
    assert set(out["explain_1_column"]) <= set(COLUMNS)  # the context is no feature to blame
    # the column's position and the table's other columns do not matter
    shuffled = table[["machine", "s3", "s1", "s0", "s2"]].assign(note="x")
    np.testing.assert_array_equal(model.predict(shuffled)["score"].to_numpy(), out["score"].to_numpy())
    inputs = {c.name: c for c in model.metadata.signature.inputs.inputs}
    assert set(inputs) == {*COLUMNS, "machine"} and inputs["machine"].required
    assert "`machine` (categories A, B)" in (path / "MODEL_CARD.md").read_text()
    loaded = gananomaly.load(path / "model")
    assert loaded.context_names_ == ["machine"]
    np.testing.assert_array_equal(loaded.score_samples(X_test, context=ctx_test), out["score"].to_numpy())


def test_a_context_the_model_cannot_use_is_named_with_its_rows(data, served):
    _, _, X_test, ctx_test, _ = data
    model = mlflow.pyfunc.load_model(str(served[1]))
    table = X_test.head(6).assign(machine=ctx_test[:6])
    cases = [
        (table.assign(machine=["A", "B", "A", "A", "C", "B"]),
         r"context column 'machine' holds values never seen in training in rows \[5\] \(counted from 1; e\.g\. "
         r"'C'\); the model knows \['A', 'B'\]"),
        (table.assign(machine=["A", None, "A", "A", "B", np.nan]),
         r"context column 'machine' is missing in rows \[2, 6\] \(counted from 1\)"),
        (table.drop(columns="machine"), r"missing inputs \['machine'\]"),  # MLflow's schema check names it
    ]
    for frame, match in cases:
        with pytest.raises(MlflowException, match=match) as info:
            model.predict(frame)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    # without a signature, the model's own check names the column
    bare = model.get_raw_model()
    from gananomaly.mlflow_pyfunc import GANAnomalyPyfunc

    with pytest.raises(MlflowException, match=r"missing the context column\(s\) \['machine'\]"):
        GANAnomalyPyfunc(bare).predict(table.drop(columns="machine"))
    with pytest.raises(MlflowException, match=r"reads each row's context from the columns \['machine'\]: send a table"):
        GANAnomalyPyfunc(bare).predict(X_test.head(3).to_numpy())


def test_a_numeric_context_is_read_from_its_columns_even_as_text(tmp_path):
    rng = np.random.RandomState(0)
    n = 400
    load = rng.uniform(0, 1, n)  # the reading follows the load: x = 3 * load + noise
    X = pd.DataFrame({"x": 3 * load + 0.1 * rng.randn(n), "y": rng.randn(n)})
    ctx = pd.DataFrame({"load": load})
    det = GANAnomalyDetector(epochs=2, encoder_epochs=1, random_state=0).fit(X, context=ctx)
    assert det.context_names_ == ["load"]
    gm.save_model(det, tmp_path / "m")
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    table = X.head(5).assign(load=load[:5])
    want = det.score_samples(X.head(5), context=ctx.head(5))
    np.testing.assert_array_equal(model.predict(table)["score"].to_numpy(), want)
    from gananomaly.mlflow_pyfunc import GANAnomalyPyfunc

    as_text = table.assign(load=[str(v) for v in load[:5]])
    np.testing.assert_array_equal(GANAnomalyPyfunc(det).predict(as_text)["score"].to_numpy(), want)
    with pytest.raises(MlflowException, match=r"context column 'load' holds values that are no finite numbers in "
                                              r"rows \[2\] \(counted from 1; e\.g\. 'high'\)"):
        GANAnomalyPyfunc(det).predict(as_text.assign(load=["0.1", "high", "0.3", "0.2", "0.5"]))
    with pytest.raises(MlflowException, match=r"context column\(s\) \['load'\] more than once"):
        GANAnomalyPyfunc(det).predict(pd.concat([table, table[["load"]]], axis=1))
    # a named context is read by name: in another order it is reordered, under other names refused
    two = pd.DataFrame({"load": load, "temp": rng.randn(n)})
    both = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(X, context=two)
    np.testing.assert_array_equal(both.score_samples(X, context=two[["temp", "load"]]),
                                  both.score_samples(X, context=two))
    with pytest.raises(ValueError, match=r"context has the columns \['load', 'heat'\], but the detector was "
                                         r"fitted with \['load', 'temp'\]"):
        both.score_samples(X, context=two.rename(columns={"temp": "heat"}))


def test_a_context_the_pyfunc_could_not_read_is_refused_at_the_save(data, tmp_path):
    X, ctx, _, _, _ = data
    quick = dict(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0)
    unnamed = GANAnomalyDetector(**quick).fit(X[:80], context=ctx[:80])  # an array: no name
    with pytest.raises(ValueError, match=r"fitted with an unnamed context.*named pandas Series"):
        gm.save_model(unnamed, tmp_path / "a")
    on_array = GANAnomalyDetector(**quick).fit(X[:80].to_numpy(), context=pd.Series(ctx[:80], name="machine"))
    with pytest.raises(ValueError, match=r"fitted on an array with a context.*\['machine'\].*fit on a DataFrame"):
        gm.save_model(on_array, tmp_path / "b")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(**quick))
    pipe.fit(X[:80].to_numpy(), gananomalydetector__context=pd.Series(ctx[:80], name="machine"))
    with pytest.raises(ValueError, match=r"fitted on an array with a context.*fit on a DataFrame"):
        gm.save_model(pipe, tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_tracked_fit_refuses_a_context_its_logged_model_could_not_read_before_training(data, tmp_path):
    from gananomaly.tracking import tracked_fit

    X, ctx, _, _, _ = data
    quick = dict(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for X_fit, context, match in [(X[:80], ctx[:80], "named pandas Series"),
                                  (X[:80].to_numpy(), pd.Series(ctx[:80], name="machine"), "X must be a DataFrame")]:
        det = GANAnomalyDetector(**quick)
        with pytest.raises(ValueError, match=match):
            tracked_fit(det, X_fit, context=context, tracking_uri=uri, experiment="refused")
        assert not hasattr(det, "n_features_in_")  # refused before the fit
    with pytest.raises(ValueError, match="context_eval is given without X_eval"):
        tracked_fit(GANAnomalyDetector(**quick), X[:80], context=pd.Series(ctx[:80], name="machine"),
                    context_eval=pd.Series(ctx[:5], name="machine"), tracking_uri=uri, experiment="refused")
    mlflow.set_tracking_uri(uri)
    try:
        assert mlflow.search_runs(search_all_experiments=True).empty
    finally:
        mlflow.set_tracking_uri(None)


def test_integer_machine_ids_score_the_same_from_csv_text_parquet_and_a_served_request(tmp_path):
    """Ids 1, 2 fitted as integers: a CSV that pandas wrote from a column with a gap holds
    "1.0", which is the machine 1 (it was an unseen category and every row of the file was
    skipped); a served request may send 1, 1.0 or "1"."""
    from gananomaly.pipelines.batch_score import score_file
    from gananomaly.pipelines.tabular import fit_tabular

    X, ctx, X_test, ctx_test, _ = contextual_data(n=300)
    ids = {"A": 1, "B": 2}
    df = pd.DataFrame(X, columns=COLUMNS).assign(machine=[ids[c] for c in ctx])
    result = fit_tabular(_config(None, label_column=None, id_columns=[], detector={"epochs": 2, "random_state": 0}),
                         df, output_dir=tmp_path / "run")
    assert result.pipeline[-1].context_categories_ == ["1", "2"]
    rows = pd.DataFrame(X_test[:40], columns=COLUMNS).assign(machine=[float(ids[c]) for c in ctx_test[:40]])
    rows.loc[3, "machine"] = np.nan
    rows.to_csv(tmp_path / "in.csv", index=False)
    rows.to_parquet(tmp_path / "in.parquet", index=False)
    out = {}
    for fmt in ("csv", "parquet"):
        stats = score_file(tmp_path / "run" / "model", tmp_path / f"in.{fmt}", tmp_path / f"{fmt}.parquet",
                           on_bad_rows="skip")
        assert stats["rows_scored"] == 39 and stats["skipped_rows"] == [4]
        out[fmt] = pd.read_parquet(tmp_path / f"{fmt}.parquet")["score"].to_numpy()
    np.testing.assert_array_equal(out["csv"], out["parquet"])
    det, pre = result.pipeline[-1], result.pipeline[:-1]
    kept = rows.drop(index=3)
    np.testing.assert_array_equal(out["csv"], det.score_samples(pre.transform(kept[COLUMNS]), context=kept["machine"]))
    gm.save_model(result.pipeline, tmp_path / "served", input_example=kept.head(3).astype({"machine": str}))
    model = mlflow.pyfunc.load_model(str(tmp_path / "served"))
    for values in (kept["machine"].astype(int), kept["machine"], kept["machine"].astype(int).astype(str)):
        np.testing.assert_array_equal(model.predict(kept.assign(machine=values.to_numpy()))["score"].to_numpy(),
                                      out["csv"])


@pytest.mark.parametrize("names, match", [
    (["machine", "other"], r"context_names.*must have between 1 and 1 entries, got 2"),
    ([3], r"context_names\[0\].*must be a string"),
    ([""], r"context_names.*distinct non-empty strings"),
])
def test_tampered_context_names_are_refused(served, tmp_path, names, match):
    import shutil

    path = tmp_path / "m"
    shutil.copytree(served[1] / "model", path)
    config = json.loads((path / CONFIG_NAME).read_text())
    config["fitted"]["extra"]["context_names"] = names
    if RECORD_DIGEST_KEY in config:
        config = with_record_digest(config)
    (path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        gananomaly.load(path)


# ------------------------------------------------------------------ the table pipeline
def _machines_csv(path, seed=0):
    """The hot/cold machines as a file: the readings, an ID, the machine and the label."""
    X, ctx, X_test, ctx_test, y = contextual_data(seed=seed)
    df = pd.concat([pd.DataFrame(X, columns=COLUMNS).assign(machine=ctx, is_anomaly=0),
                    pd.DataFrame(X_test, columns=COLUMNS).assign(machine=ctx_test, is_anomaly=y)], ignore_index=True)
    df.insert(0, "reading_id", [f"r{i:05d}" for i in range(len(df))])
    df.to_csv(path, index=False)
    return df


def _config(path, **kw):
    from gananomaly.pipelines.tabular import TabularConfig

    base = dict(name="machines", path=str(path), id_columns=["reading_id"], label_column="is_anomaly",
                context_column="machine", detector={"epochs": 40, "random_state": 0}, mlflow=False)
    return TabularConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    from gananomaly.pipelines.tabular import fit_tabular

    root = tmp_path_factory.mktemp("machines")
    df = _machines_csv(root / "machines.csv")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = fit_tabular(_config(root / "machines.csv", mlflow=True, tracking_uri=uri), output_dir=root / "run")
    return df, root, result, uri


def test_a_config_context_column_makes_the_pipeline_judge_each_row_for_its_context(machines):
    from gananomaly.pipelines.tabular import fit_tabular, score_tabular

    df, root, result, uri = machines
    det = result.pipeline[-1]
    assert det.context_names_ == ["machine"] and det.context_categories_ == ["A", "B"]
    assert "machine" not in result.numeric_columns + result.categorical_columns
    plain = fit_tabular(_config(root / "machines.csv", context_column=None, drop_columns=["machine"]), save=False)
    print(f"machines: with the context column AUROC {result.auroc:.3f}, without it {plain.auroc:.3f}")
    assert result.auroc >= 0.95
    assert plain.auroc <= 0.7  # every reading is normal for *some* machine
    # the saved model and the tracked run's logged model score a table with the column as the fit did
    features = df.drop(columns=["is_anomaly"])
    local = score_tabular(root / "run" / "model", features, id_column="reading_id")
    held = result.test_scores
    pos = features.set_index("reading_id").index.get_indexer(held["reading_id"])
    np.testing.assert_array_equal(local["score"].to_numpy()[pos], held["score"].to_numpy())
    mlflow.set_tracking_uri(uri)
    try:
        run = mlflow.get_run(result.run_id)
        assert run.data.params["context_column"] == "machine"
        served = mlflow.pyfunc.load_model(run.data.tags["gananomaly.model_uri"])
        out = served.predict(features.drop(columns=["reading_id"]), params={"explain": 1})
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_array_equal(out["score"].to_numpy(), local["score"].to_numpy())
    assert set(out["explain_1_column"]) <= set(COLUMNS)
    from gananomaly.pipelines.tabular import explain_tabular

    why = explain_tabular(result.pipeline, features.head(20), top=2)
    assert len(why) == 40 and set(why["column"]) <= set(COLUMNS)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_batch_job_reads_the_context_column_and_skips_rows_it_cannot_judge(machines, tmp_path, fmt):
    from gananomaly.pipelines.batch_score import score_file
    from gananomaly.pipelines.tabular import score_tabular

    df, root, _, _ = machines
    model_dir = root / "run" / "model"
    rows = df.drop(columns=["is_anomaly"]).head(400).copy()
    rows["machine"] = rows["machine"].astype(object)
    rows.loc[[5, 250], "machine"] = "C"  # rows 6 and 251: a machine never seen in training
    rows.loc[[17], "machine"] = None  # row 18: no machine
    inp = tmp_path / f"in.{fmt}"
    rows.to_csv(inp, index=False) if fmt == "csv" else rows.to_parquet(inp, index=False)
    with pytest.raises(ValueError, match=r"rows whose context the model cannot use: context column 'machine' is "
                                         r"missing in rows 18; every row needs its context; context column 'machine' "
                                         r"holds values never seen in training in rows 6 \(e\.g\. \['C'\]\); the "
                                         r"model knows \['A', 'B'\]\. Fix them or skip those rows"):  # the first chunk
        score_file(model_dir, inp, tmp_path / "x.parquet", id_column="reading_id", chunk_rows=128)
    assert not (tmp_path / "x.parquet").exists()
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", id_column="reading_id", chunk_rows=128,
                       on_bad_rows="skip", explain=1)
    out = pd.read_parquet(tmp_path / "s.parquet")
    assert set(out["explain_1_column"]) <= set(COLUMNS)
    assert stats["rows_scored"] == 397 and stats["skipped_rows"] == [6, 18, 251]
    assert stats["bad_values"] == {"machine": 3}
    good = rows.drop(index=[5, 17, 250])
    want = score_tabular(model_dir, good, id_column="reading_id")
    assert out["reading_id"].tolist() == good["reading_id"].tolist()
    np.testing.assert_array_equal(out["score"].to_numpy(), want["score"].to_numpy())
    # in memory too, whatever the index: a repeated label keeps its own rows only
    repeated = rows.set_axis(np.arange(len(rows)) // 2)
    skipped = score_tabular(model_dir, repeated, id_column="reading_id", on_bad_rows="skip")
    assert skipped["reading_id"].tolist() == good["reading_id"].tolist()
    assert skipped.index.tolist() == (np.setdiff1d(np.arange(len(rows)), [5, 17, 250]) // 2).tolist()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['machine'\] that the model needs"):
        score_file(model_dir, _without(rows, "machine", tmp_path, fmt), tmp_path / "y.parquet", id_column="reading_id")


def _without(rows, col, tmp_path, fmt):
    path = tmp_path / f"no_{col}.{fmt}"
    frame = rows.drop(columns=[col])
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    return path


def test_a_context_column_config_is_checked_before_the_fit(machines, tmp_path):
    from gananomaly.pipelines.tabular import fit_tabular, load_config

    df, root, _, _ = machines
    with pytest.raises(ValueError, match=r"data.context_column: column 'machine' is also listed in "
                                         r"data.categorical_columns|data.categorical_columns: column 'machine' is "
                                         r"also listed in data.context_column"):
        _config(root / "machines.csv", categorical_columns=["machine"])
    with pytest.raises(ValueError, match=r"data.context_column: column 'site' not in the data"):
        fit_tabular(_config(root / "machines.csv", context_column="site"), save=False)
    gaps = df.copy()
    gaps.loc[[3, 10], "machine"] = np.nan
    with pytest.raises(ValueError, match=r"data.context_column: column 'machine' is missing in rows 4, 11"):
        fit_tabular(_config(root / "machines.csv"), gaps, save=False)
    novel = df.copy()
    novel.loc[len(df) - 1, "machine"] = "Z"  # the last row, an anomaly (held out)
    with pytest.raises(ValueError, match=rf"held-out rows {len(df)} have contexts no training row has "
                                         r"\(e\.g\. 'Z'"):
        fit_tabular(_config(root / "machines.csv"), novel, save=False)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[data]\npath = "{root / "machines.csv"}"\ncontext_column = ["machine"]\n')
    with pytest.raises(ValueError, match=r"data.context_column must be a non-empty string, got \['machine'\]"):
        load_config(toml)
