"""The logged tabular pipeline scores a Spark DataFrame through ``mlflow.pyfunc.spark_udf``."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.spark

pyspark = pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):  # pragma: no cover - machine setup
    pytest.skip("Spark needs Java (no java on PATH, JAVA_HOME unset)", allow_module_level=True)

RESULT_TYPE = (
    "discriminator double, reconstruction double, latent double, knn double, combined double, score double, label long"
)
TINY = {"epochs": 3, "hidden_dims": [16], "latent_dim": 4, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_LOCAL_IP")}
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers run the venv's interpreter
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    session = (SparkSession.builder.master("local[2]").appName("gananomaly-test")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .getOrCreate())
    try:
        yield session
    finally:
        session.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny tabular pipeline logged to a SQLite MLflow store: (result, tracking_uri, model_uri)."""
    from gananomaly.pipelines.tabular import TabularConfig, fit_tabular
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("spark-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = TabularConfig(name="spark", builtin="mixed", options={"n_samples": 200}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", detector=dict(TINY),
                        mlflow=True, experiment="spark-test")
    cwd = os.getcwd()
    os.chdir(root)  # MLflow's default artifact root is relative to the working directory
    try:
        result = fit_tabular(cfg, save=False, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    model_uri = run.data.tags.get("gananomaly.model_uri") or f"runs:/{result.run_id}/model"
    return result, uri, model_uri


def test_spark_udf_scores_equal_local_scores(spark, logged):
    import mlflow
    from gananomaly.pipelines.datasets import mixed_table
    from gananomaly.pipelines.tabular import model_schema, prepare_frame
    from pyspark.sql.functions import struct

    result, uri, model_uri = logged
    pipe = result.pipeline
    schema = model_schema(pipe)
    df = mixed_table(120, random_state=4).drop(columns=["is_anomaly", "anomaly_kind"])
    df.loc[5, "channel"] = "drone"  # an unseen category: scored, and labelled -1, on Spark too
    X, _, _ = prepare_frame(df, schema)
    local = pipe.score_samples(X)
    local_label = pipe.predict(X)

    pdf = X.copy()
    pdf.insert(0, "order_id", df["order_id"].to_numpy())
    sdf = spark.createDataFrame(pdf.astype({c: object for c in schema.categorical})).repartition(2)
    mlflow.set_tracking_uri(uri)
    try:
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE, env_manager="local")
    finally:
        mlflow.set_tracking_uri(None)
    out = (sdf.withColumn("s", udf(struct(*schema.columns)))
           .select("order_id", "s.*").toPandas().set_index("order_id").loc[df["order_id"]])
    assert list(out.columns) == ["discriminator", "reconstruction", "latent", "knn", "combined", "score", "label"]
    assert sdf.rdd.getNumPartitions() == 2
    np.testing.assert_allclose(out["score"].to_numpy(), local, rtol=0, atol=1e-6)
    expected_label = local_label.copy()
    expected_label[5] = -1  # a category never seen in training is an outlier whatever its score
    np.testing.assert_array_equal(out["label"].to_numpy(), expected_label)
    np.testing.assert_allclose(out["combined"].to_numpy(), -local, rtol=0, atol=1e-6)


def test_spark_udf_reads_each_rows_context_from_its_column(spark, tmp_path):
    """A table model fitted with a context column (the account tier) reads it from the Spark
    row, as the pyfunc and the batch job do: the same scores as scoring locally."""
    import mlflow
    from gananomaly.pipelines.datasets import mixed_table
    from gananomaly.pipelines.tabular import TabularConfig, fit_tabular, model_schema, score_tabular
    from mlflow.tracking import MlflowClient
    from pyspark.sql.functions import struct

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = TabularConfig(name="spark-context", builtin="mixed", options={"n_samples": 200}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", context_column="tier",
                        detector=dict(TINY), mlflow=True, experiment="spark-context")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = fit_tabular(cfg, save=False, tracking_uri=uri)
    finally:
        os.chdir(cwd)
    model_uri = MlflowClient(tracking_uri=uri).get_run(result.run_id).data.tags["gananomaly.model_uri"]
    schema = model_schema(result.pipeline)
    assert schema.context == ["tier"] and "tier" not in schema.columns
    df = mixed_table(120, random_state=4).drop(columns=["is_anomaly", "anomaly_kind"])
    local = score_tabular(result.pipeline, df, id_column="order_id")
    sdf = spark.createDataFrame(df[["order_id", *schema.required]].astype(
        {c: object for c in schema.text_columns})).repartition(2)
    mlflow.set_tracking_uri(uri)
    try:
        udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type=RESULT_TYPE, env_manager="local")
    finally:
        mlflow.set_tracking_uri(None)
    out = (sdf.withColumn("s", udf(struct(*schema.required)))
           .select("order_id", "s.*").toPandas().set_index("order_id").loc[df["order_id"]])
    np.testing.assert_allclose(out["score"].to_numpy(), local["score"].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["label"].to_numpy(), local["label"].to_numpy())
