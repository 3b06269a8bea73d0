"""The tabular pipeline: configs, preprocessing, fitting, saving, CLI, MLflow, quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.cli import main
from gananomaly.pipelines.datasets import breast_cancer, mixed_table, wine
from gananomaly.pipelines.tabular import (
    ModelSchema,
    TabularConfig,
    build_pipeline,
    fit_tabular,
    infer_columns,
    load_config,
    model_schema,
    prepare_frame,
    score_tabular,
)

import gananomaly

CONFIGS = Path(__file__).resolve().parent.parent / "pipelines" / "configs"
# validation_fraction 0: no fidelity measurement (these tests look at the pipeline, not the generator)
TINY = {"epochs": 3, "hidden_dims": [16], "latent_dim": 4, "random_state": 0, "device": "cpu",
        "validation_fraction": 0}


def tiny_config(**kw) -> TabularConfig:
    base = dict(name="tiny", builtin="mixed", options={"n_samples": 300, "random_state": 0},
                id_columns=["order_id"], drop_columns=["anomaly_kind"], label_column="is_anomaly",
                detector=dict(TINY), mlflow=False)
    base.update(kw)
    return TabularConfig(**base)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("tabular")
    return fit_tabular(tiny_config(), output_dir=out), out


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# The [detector] section of a config with the TINY settings.
TINY_TOML = "[detector]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())


def mixed_config(path: Path, name: str, n_samples: int) -> Path:
    """A labelled config on the built-in mixed table with the TINY detector."""
    return write_toml(path, f"""
name = "{name}"
[data]
builtin = "mixed"
options = {{ n_samples = {n_samples} }}
id_columns = ["order_id"]
drop_columns = ["anomaly_kind"]
label_column = "is_anomaly"
{TINY_TOML}
""")


# ------------------------------------------------------------------------------ configs
def test_example_configs_load_and_describe_their_data():
    cancer = load_config(CONFIGS / "breast_cancer.toml")
    assert (cancer.builtin, cancer.label_column, cancer.anomaly_values) == ("breast_cancer", "diagnosis",
                                                                             ["malignant"])
    w = load_config(CONFIGS / "wine.toml")
    df = wine(**w.options)
    assert (df["cultivar"] == 2).sum() == 10 and (df["cultivar"] != 2).sum() == 130
    mixed = load_config(CONFIGS / "mixed.toml")
    num, cat = infer_columns(mixed, mixed_table(**mixed.options))
    assert num == ["amount", "n_items", "duration_s", "customer_age"]
    assert cat == ["channel", "device", "country"]
    assert mixed.context_column == "tier"  # the amount follows the tier: each order is judged for its own
    assert {"order_id", "is_anomaly", "anomaly_kind", "tier"}.isdisjoint(num + cat)


@pytest.mark.parametrize("text, fragment", [
    ('bogus = 1\n[data]\nbuiltin = "wine"\n', "bogus"),
    ('[data]\nbuiltin = "wine"\ncolumns = ["a"]\n', "columns"),
    ('[data]\nbuiltin = "wine"\n[preprocessing]\nscaler = "zscore"\n', "preprocessing.scaler"),
    ('[data]\nbuiltin = "wine"\n[split]\ntest_size = 1.5\n', "split.test_size"),
    ('[data]\nbuiltin = "wine"\npath = "x.csv"\n', "exactly one of data.path"),
    ('[data]\nbuiltin = "iris"\n', "data.builtin"),
    ('[data]\nbuiltin = "wine"\n[detector]\nepoch = 3\n', "epoch"),
    ('[data]\nbuiltin = "wine"\n[detector]\nepochs = 0\n', "detector"),
    ('[data]\nbuiltin = "wine"\nid_columns = ["a"]\ndrop_columns = ["a"]\n', "'a' is also listed"),
    ('[data]\nbuiltin = "wine"\n[mlflow]\nenabled = "yes"\n', "mlflow.enabled"),
    ('[data\nbuiltin = "wine"\n', "not valid TOML"),
    ('name = "x"\n', "[data] section missing"),
])
def test_bad_config_names_the_key(tmp_path, text, fragment):
    path = write_toml(tmp_path / "c.toml", text)
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_config_columns_must_exist_in_the_data():
    cfg = tiny_config(id_columns=["customer_id"])
    with pytest.raises(ValueError, match=r"data\.id_columns: column\(s\) \['customer_id'\] not in the data"):
        fit_tabular(cfg, save=False)


def test_missing_labels_are_named_by_row():
    df = mixed_table(100)
    df.loc[[4, 9], "is_anomaly"] = np.nan
    with pytest.raises(ValueError, match=r"missing labels in rows 5, 10"):
        fit_tabular(tiny_config(), df, save=False)


def test_a_config_for_a_dataframe_needs_no_data_path():
    cfg = TabularConfig(name="mine", id_columns=["order_id"], drop_columns=["anomaly_kind"],
                        label_column="is_anomaly", detector=dict(TINY), mlflow=False)
    result = fit_tabular(cfg, mixed_table(200), save=False)
    assert result.n_train > 0 and result.metrics is not None
    with pytest.raises(ValueError, match=r"the config names no data .*fit_tabular\(config, dataframe\)"):
        fit_tabular(cfg, save=False)


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_fit(tmp_path, monkeypatch):
    """It was found after the fit (and after a tracked run was logged), with a half-written output."""
    from gananomaly.pipelines import tabular

    monkeypatch.setattr(tabular, "build_pipeline", lambda *a: 1 / 0)  # nothing may start
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"output folder .*afile.* is a file, not a folder"):
        fit_tabular(tiny_config(), output_dir=tmp_path / "afile")
    # a file where a folder to create goes (it failed at the save, after the training)
    with pytest.raises(ValueError, match=r"cannot be created: .*afile.* is a file, not a folder"):
        fit_tabular(tiny_config(), output_dir=tmp_path / "afile" / "run" / "deeper")
    (tmp_path / "out" / "metrics.json").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds a folder named metrics\.json"):
        fit_tabular(tiny_config(), output_dir=tmp_path / "out")
    (tmp_path / "other" / "model").mkdir(parents=True)
    (tmp_path / "other" / "model" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"cannot save model to .*model.*not a gananomaly model"):
        fit_tabular(tiny_config(), output_dir=tmp_path / "other")


def test_a_csv_separated_by_semicolons_is_refused_not_read_as_one_column(tmp_path):
    """It was fitted as one text column (every row its own category), with no word."""
    mixed_table(50).to_csv(tmp_path / "semi.csv", sep=";", index=False)
    cfg = tiny_config(builtin=None, options={}, path=str(tmp_path / "semi.csv"))
    with pytest.raises(ValueError, match=r"reads as one column named 'order_id;.*separated by semicolons"):
        fit_tabular(cfg, save=False)
    empty = mixed_table(50).assign(notes=np.nan)  # the imputer skipped it; the summary still counted it
    with pytest.raises(ValueError, match=r"column\(s\) \['notes'\] hold no values at all.*drop_columns"):
        fit_tabular(tiny_config(), empty, save=False)


def test_anomaly_values_that_match_no_label_are_refused():
    with pytest.raises(ValueError, match=r"data\.anomaly_values: none of \['yes'\] occurs in column 'is_anomaly' "
                                         r"\(its values: \['0', '1'\]\)"):
        fit_tabular(tiny_config(anomaly_values=["yes"]), mixed_table(100), save=False)
    clean = mixed_table(100).assign(is_anomaly=0)  # a label that is normal everywhere: no typo, it fits
    assert fit_tabular(tiny_config(), clean, save=False).n_train > 0
    with pytest.raises(ValueError, match=r"split\.test_size = 0\.999 cannot split \d+ normal rows"):
        fit_tabular(tiny_config(test_size=0.999), mixed_table(100), save=False)  # scikit-learn's words only


def test_a_numeric_column_with_a_few_bad_cells_is_not_read_as_categories():
    """One '12,50' among 300 amounts made the column text: it was one-hot encoded, and every
    new amount was an unseen category. The fit names the column and the row in the data."""
    df = mixed_table(300).astype({"amount": object})
    df.loc[7, "amount"] = "12,50"
    with pytest.raises(ValueError, match=r"column 'amount' holds numbers in 299 of its 300 filled rows, but "
                                         r"row 8 \(counted from 1\) is no number \(e\.g\. \['12,50'\]\).*"
                                         r"data\.categorical_columns"):
        fit_tabular(tiny_config(), df, save=False)
    codes = mixed_table(300).assign(tier=lambda d: np.where(np.arange(300) % 10, d["n_items"].astype(str), "other"))
    assert "tier" in infer_columns(tiny_config(), codes)[1]  # few distinct codes: categories, as before
    zips = mixed_table(300).assign(zip=[f"{10000 + i}" if i % 20 else f"{10000 + i}-1234" for i in range(300)])
    assert "zip" in infer_columns(tiny_config(), zips)[1]  # 5% of ZIP+4 codes: categories (with a warning)
    listed = tiny_config(categorical_columns=["amount", "channel", "device", "tier", "country"])
    assert "amount" in infer_columns(listed, df)[1]  # the config's word goes
    numeric = tiny_config(numeric_columns=["amount", "n_items", "duration_s", "customer_age"])
    with pytest.raises(ValueError, match=r"the data: .*column 'amount': rows 8 \(e\.g\. \['12,50'\]\)\. "
                                         r"Fix or remove those rows"):
        fit_tabular(numeric, df, save=False)  # declared numeric: the cell is named by its row in the data


def test_constant_columns_are_named_by_input_column_not_position():
    """The detector sees the preprocessed array, so its warning said 'columns constant ...: 1'.
    The pipeline names the input column (and the category of a one-hot feature); other
    warnings of the fit pass unchanged."""
    import warnings

    df = mixed_table(300).assign(site=7.5, region="north")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_tabular(tiny_config(), df, save=False)
    constant = [str(w.message) for w in caught if "constant in the training data" in str(w.message)]
    assert len(constant) == 1, constant
    assert constant[0].endswith(": 'site', 'region=north'"), constant[0]
    # a fit that fails still shows them (as the detector gave them)
    from gananomaly import GANAnomalyDetector

    def fail(self, *args, **kwargs):
        raise FloatingPointError("diverged")

    with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("always")
        patch.setattr(GANAnomalyDetector, "_build_arch", fail)
        with pytest.raises(FloatingPointError):
            fit_tabular(tiny_config(), df, save=False)
    assert [w for w in caught if "constant in the training data" in str(w.message)]


def test_a_config_without_a_detector_seed_is_reproducible():
    """The split's seed seeds the detector too when [detector] sets none (it was None: every
    run of the same config gave other scores)."""
    params = {k: v for k, v in TINY.items() if k != "random_state"}
    runs = [fit_tabular(tiny_config(detector=dict(params), random_state=3), save=False) for _ in range(2)]
    assert runs[0].pipeline[-1].random_state == 3
    np.testing.assert_array_equal(runs[0].test_scores["score"], runs[1].test_scores["score"])
    other = fit_tabular(tiny_config(detector=dict(params), random_state=4), save=False)
    assert other.pipeline[-1].random_state == 4


@pytest.mark.parametrize("fmt", ["%Y/%m/%d", "%d.%m.%Y", "%d %b %Y", "%d-%b-%Y %H:%M", "%b %d, %Y",
                                 "%a, %d %b %Y %H:%M:%S GMT", "%d/%m/%Y %I:%M %p", "%H:%M:%S"])
def test_dates_and_times_written_as_text_are_refused_in_any_common_format(fmt):
    """Only ISO and d/m/y text was recognised: '31 Jan 2024' or '31.01.2024' columns were
    one-hot encoded, one category per day. A few distinct values stay categories; version
    strings and codes are not dates."""
    when = pd.Series(pd.date_range("2024-01-01 06:00", periods=300, freq="1441min"))  # a day and a minute apart
    df = mixed_table(300).assign(when=when.dt.strftime(fmt).to_numpy())
    with pytest.raises(ValueError, match=r"column\(s\) \['when'\] hold dates or durations"):
        infer_columns(tiny_config(), df)
    few = mixed_table(300).assign(when=np.where(np.arange(300) % 2, "31 Jan 2024", "1 Feb 2024"))
    assert "when" in infer_columns(tiny_config(), few)[1]
    versions = mixed_table(300).assign(when=[f"1.{i % 30}.{i // 30}" for i in range(300)])
    assert "when" in infer_columns(tiny_config(), versions)[1]


# ------------------------------------------------------------------------------ pipeline
def test_pipeline_is_column_transformer_then_detector():
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    cfg = tiny_config(scaler="robust", categorical_imputer="constant")
    pipe = build_pipeline(cfg, mixed_table(100))
    assert [name for name, _ in pipe.steps] == ["preprocess", "detector"]
    pre = pipe.steps[0][1]
    assert isinstance(pre, ColumnTransformer) and pre.remainder == "drop"
    roles = {name: cols for name, _, cols in pre.transformers}
    assert roles["numeric"] == ["amount", "n_items", "duration_s", "customer_age"]
    assert roles["categorical"] == ["channel", "device", "tier", "country"]
    enc = pre.transformers[1][1].steps[-1][1]
    assert isinstance(enc, OneHotEncoder) and enc.handle_unknown == "ignore"
    assert type(pre.transformers[0][1].steps[-1][1]).__name__ == "RobustScaler"
    assert pipe.steps[1][1].get_params()["epochs"] == 3


def test_explicit_column_roles_override_dtypes():
    cfg = tiny_config(categorical_columns=["n_items", "channel", "device", "tier", "country"])
    num, cat = infer_columns(cfg, mixed_table(100))
    assert "n_items" in cat and "n_items" not in num


def test_fit_splits_normal_rows_saves_and_reloads(fitted):
    result, out = fitted
    df = mixed_table(300, random_state=0)
    n_normal, n_anom = int((df.is_anomaly == 0).sum()), int(df.is_anomaly.sum())
    assert result.n_train == n_normal - int(np.ceil(0.3 * n_normal))
    assert result.n_test == n_normal - result.n_train + n_anom
    assert set(result.metrics.index) == {"discriminator", "reconstruction", "latent", "knn", "combined"}
    # the reported AUROC is the combined score's on the held-out rows written out beside it
    from sklearn.metrics import roc_auc_score

    ts = result.test_scores
    assert result.auroc == pytest.approx(roc_auc_score(ts.y_true, ts.combined), abs=1e-12)
    # held-out scores carry the ID and the truth; anomalies are all held out
    ts = result.test_scores
    assert list(ts.columns) == ["order_id", "discriminator", "reconstruction", "latent", "knn", "combined", "score",
                                "label", "y_true"]
    assert int(ts.y_true.sum()) == n_anom
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_train"] == result.n_train
    assert summary["metrics"]["combined"]["auroc"] == pytest.approx(result.auroc)
    loaded = gananomaly.load(out / "model")
    X, _, _ = prepare_frame(df, model_schema(loaded))
    np.testing.assert_array_equal(loaded.score_samples(X), result.pipeline.score_samples(X))


def test_labels_ids_and_dropped_columns_are_never_features(fitted):
    result, _ = fitted
    schema = model_schema(result.pipeline)
    assert schema.columns == result.numeric_columns + result.categorical_columns
    assert not {"order_id", "is_anomaly", "anomaly_kind"} & set(schema.columns)
    assert schema.categories["channel"] == {"app", "store", "web"}


def test_a_category_missing_in_every_row_of_a_batch_is_imputed_as_in_any_other_batch(fitted):
    """A categorical column missing in every row of a chunk or a request held None, which the
    imputer does not see as missing: those rows scored as of an unknown category (5 score
    units off), so a batch job's scores depended on its chunking, and a served row with a
    missing category was scored wrongly. The pyfunc and the table job share the conversion."""
    result, _ = fitted
    df = mixed_table(40, random_state=5).assign(country=None)
    alone = score_tabular(result.pipeline, df)["score"].to_numpy()
    mixed = df.copy()
    mixed.loc[0, "country"] = "DE"  # one filled cell: the others were imputed
    with_one = score_tabular(result.pipeline, mixed)["score"].to_numpy()
    np.testing.assert_allclose(alone[1:], with_one[1:], rtol=1e-12)
    one_by_one = np.concatenate([score_tabular(result.pipeline, df.iloc[i:i + 1])["score"].to_numpy()
                                 for i in range(3)])
    np.testing.assert_allclose(one_by_one, alone[:3], rtol=1e-12)


def test_score_tabular_handles_missing_values_and_unseen_categories(fitted):
    result, out = fitted
    df = mixed_table(60, random_state=3)
    df.loc[0, "amount"] = np.nan
    df.loc[1, "country"] = None
    df.loc[2, "channel"] = "drone"  # never seen in training
    scores = score_tabular(out / "model", df, id_column="order_id")
    assert len(scores) == 60 and np.isfinite(scores[["combined", "score"]].to_numpy()).all()
    assert list(scores["order_id"]) == list(df["order_id"])
    with pytest.raises(ValueError, match=r"column 'channel' has categories not seen in training in rows 3 "):
        score_tabular(result.pipeline, df, unseen="error")
    # the scores keep the input's index, so they join back onto its rows (they came back 0..n-1)
    shuffled = df.iloc[::-1].set_axis(np.arange(500, 560) * 7).astype({"amount": object})
    shuffled.iloc[4, shuffled.columns.get_loc("amount")] = "oops"
    kept = score_tabular(result.pipeline, shuffled, id_column="order_id", on_bad_rows="skip")
    assert list(kept.index) == [i for j, i in enumerate(shuffled.index) if j != 4]
    joined = shuffled.drop(index=shuffled.index[4]).join(kept["score"])
    np.testing.assert_allclose(joined["score"], scores.set_index("order_id").loc[joined["order_id"], "score"])


def test_categorical_codes_read_as_numbers_match_string_categories():
    df = pd.DataFrame({"code": [1.0, 2.0, np.nan], "x": ["1", "2", "3"]})
    frame, keep, bad = prepare_frame(df, ModelSchema(["x"], ["code"]))
    assert frame["code"].tolist()[:2] == ["1", "2"] and pd.isna(frame["code"].iloc[2])
    assert frame["x"].tolist() == [1.0, 2.0, 3.0] and keep.all() and not bad


def test_fit_from_csv_path_relative_to_config(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mixed_table(200).to_csv(data_dir / "orders.csv", index=False)
    cfg = write_toml(tmp_path / "orders.toml", f"""
name = "orders"
[data]
path = "data/orders.csv"
id_columns = ["order_id"]
drop_columns = ["anomaly_kind"]
{TINY_TOML}
[mlflow]
enabled = false
""")
    result = fit_tabular(cfg, output_dir=tmp_path / "out")
    # no label column: every row is used for fitting and nothing is evaluated
    assert result.metrics is None and result.n_train == 200 and result.n_test == 0
    assert "is_anomaly" in result.numeric_columns  # unlabelled: an ordinary column now
    assert (tmp_path / "out" / "model" / "pipeline.json").is_file()


# ------------------------------------------------------------------------------ CLI
def test_cli_fit_then_score(tmp_path, capsys):
    cfg = mixed_config(tmp_path / "c.toml", "cli", 240)
    rc = main(["tabular", "fit", "--config", str(cfg), "--no-mlflow", "--output", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "reconstruction" in out and f"model: {tmp_path / 'run' / 'model'}" in out
    inp = tmp_path / "new.parquet"
    mixed_table(90, random_state=5).drop(columns=["is_anomaly", "anomaly_kind"]).to_parquet(inp)
    rc = main(["tabular", "score", "--config", str(cfg), "--model", str(tmp_path / "run" / "model"),
               "--input", str(inp), "--output", str(tmp_path / "s.csv"), "--chunk-rows", "40"])
    assert rc == 0
    scores = pd.read_csv(tmp_path / "s.csv")
    assert list(scores.columns) == ["order_id", "discriminator", "reconstruction", "latent", "knn", "combined", "score",
                                    "label"]
    assert len(scores) == 90 and set(scores.label) <= {-1, 1}


def test_cli_fit_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    cfg = write_toml(tmp_path / "c.toml", '[data]\nbuiltin = "wine"\n[split]\nfit_on = "most"\n')
    assert main(["tabular", "fit", "--config", str(cfg)]) == 2
    assert "split.fit_on" in capsys.readouterr().err
    assert main(["tabular", "fit", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_fit_with_tracking_server_down_exits_1_and_keeps_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = mixed_config(tmp_path / "c.toml", "down", 120)
    rc = main(["tabular", "fit", "--config", str(cfg), "--tracking-uri", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert rc == 1 and "127.0.0.1:9" in err and "--no-mlflow" in err
    saved = list((tmp_path / "gananomaly-untracked").iterdir())
    assert len(saved) == 1 and (saved[0] / "pipeline.json").is_file()


# ------------------------------------------------------------------------------ MLflow
def test_fit_logs_the_pipeline_to_mlflow(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = fit_tabular(tiny_config(mlflow=True, experiment="tab-test"), save=False, tracking_uri=uri)
    assert result.run_id is not None
    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    assert run.data.params["config_name"] == "tiny"
    assert run.data.params["categorical_columns"] == "channel,device,tier,country"
    assert run.data.metrics["auroc_combined"] == pytest.approx(result.auroc)
    try:
        from gananomaly import mlflow as flavor
    except ImportError:
        return
    model_uri = run.data.tags.get("gananomaly.model_uri") or f"runs:/{result.run_id}/model"
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        loaded = flavor.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    df = mixed_table(50, random_state=7)
    X, _, _ = prepare_frame(df, model_schema(result.pipeline))
    np.testing.assert_allclose(loaded.score_samples(X), result.pipeline.score_samples(X), rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------ quality
@pytest.mark.slow
def test_breast_cancer_config_reaches_auroc_090(tmp_path):
    cfg = load_config(CONFIGS / "breast_cancer.toml")
    result = fit_tabular(cfg, mlflow=False, output_dir=tmp_path)
    assert result.n_train == 249 and result.n_test == 108 + 212
    assert result.auroc >= 0.90, result.metrics


@pytest.mark.slow
def test_mixed_table_config_finds_every_kind_and_keeps_the_premium_tier_normal(tmp_path):
    """The shipped mixed config labelled every normal premium-tier order (10 % of the rows) an
    outlier: its encoder mapped that small mode onto the other tiers. The latent cycle term
    (ziz_weight) made the encoder invert it, yet with the tier a feature most premium rows were
    still labelled outliers; judged for their own tier (context_column) far fewer are, and the
    normal rows flagged come near the contamination (figures: README, benchmarks/NOTES.md)."""
    cfg = load_config(CONFIGS / "mixed.toml")
    result = fit_tabular(cfg, mlflow=False, output_dir=tmp_path)
    assert result.auroc >= 0.99, result.metrics
    df = mixed_table(**cfg.options)
    flagged = score_tabular(result.pipeline, df.drop(columns=["is_anomaly", "anomaly_kind"]))["label"] == -1
    normal = df["is_anomaly"] == 0
    assert flagged[~normal].mean() >= 0.95
    assert flagged[normal & (df["tier"] == "premium")].mean() < 0.5
    assert flagged[normal].mean() < 0.09


def test_builtin_tables_have_ids_and_labels():
    bc = breast_cancer()
    assert bc.shape == (569, 32) and set(bc.diagnosis) == {"benign", "malignant"}
    assert bc.sample_id.is_unique
    mt = mixed_table(400, contamination=0.05)
    assert int(mt.is_anomaly.sum()) == 20 and mt.order_id.is_unique
    assert set(mt.anomaly_kind) == {"normal", "category_combination", "amount_range", "duration_for_items",
                                    "numeric_range"}
    # the planted category pair never occurs among normal rows
    normal = mt[mt.is_anomaly == 0]
    assert set(normal.loc[normal.channel == "store", "device"]) == {"pos"}
