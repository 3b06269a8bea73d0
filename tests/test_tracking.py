"""Tracked fits, the MLflow callback, run comparison and the tracked demo (SQLite store in a temp dir)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import gananomaly
from gananomaly import GANAnomalyDetector
from gananomaly.tracking import (
    DEFAULT_TRACKING_URI,
    MLflowCallback,
    TrackingUnavailableError,
    compare_runs,
    resolve_tracking_uri,
    tracked_fit,
)

EPOCHS = 3


def small_detector(**kw) -> GANAnomalyDetector:
    params = dict(epochs=EPOCHS, hidden_dims=(16,), random_state=0)
    params.update(kw)
    return GANAnomalyDetector(**params)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(160, 4)
    X_eval = np.vstack([rng.randn(40, 4), 6 + rng.randn(10, 4)])
    y_eval = np.r_[np.zeros(40, dtype=int), np.ones(10, dtype=int)]
    return X, X_eval, y_eval


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module (creating the schema takes seconds), in ``<tmp>/store``.

    Module-scoped fixtures run in ``<tmp>/cwd``, another directory: the experiments we create
    keep their artifacts beside the store, never under the working directory.
    """
    root = tmp_path_factory.mktemp("mlflow")
    (root / "store").mkdir()
    (root / "cwd").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "cwd")
        yield f"sqlite:///{root}/store/mlflow.db"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Nothing may land in the repository's ./mlflow.db or ./mlruns: run every test in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


class Recorder(gananomaly.Callback):
    def __init__(self):
        self.epochs: list[tuple[str, int]] = []

    def on_epoch_end(self, estimator, logs):
        self.epochs.append((logs["phase"], logs["epoch"]))


@pytest.fixture(scope="module")
def tracked(data, store):
    """One fully tracked fit shared by the read-back tests."""
    X, X_eval, y_eval = data
    recorder = Recorder()
    det = small_detector(callbacks=(recorder,))
    model, run_id = tracked_fit(det, X, X_eval=X_eval, y_eval=y_eval, experiment="read-back", run_name="first",
                                tracking_uri=store, extra_params={"dataset": "gauss"}, tags={"team": "qa"})
    return det, model, run_id, recorder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------- URI resolution
def test_resolve_tracking_uri_order(monkeypatch):
    assert DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    assert resolve_tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"


# ---------------------------------------------------------------------------------- tracked fit
def test_tracked_fit_returns_fitted_model_and_finished_run(tracked, store, data):
    det, model, run_id, _ = tracked
    assert model is det
    assert hasattr(det, "offset_")
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.tags["team"] == "qa"
    # the artifacts lie beside the store, not under the directory the fit ran in
    store_dir = Path(store[len("sqlite:///"):]).parent
    artifacts = MlflowClient(store).get_experiment(run.info.experiment_id).artifact_location
    assert artifacts == (store_dir / "mlartifacts" / "read-back").as_uri()
    assert (store_dir / "mlartifacts" / "read-back" / run_id / "artifacts" / "plots" / "loss_curves.png").is_file()
    assert [p for p in (store_dir.parent / "cwd").rglob("*") if p.is_file()] == []


def test_tracked_fit_logs_every_param_and_the_data(tracked, store, data):
    det, _, run_id, _ = tracked
    params = MlflowClient(store).get_run(run_id).data.params
    expected = {k for k in det.get_params(deep=False) if k != "callbacks"}
    assert expected <= set(params)
    assert params["epochs"] == str(EPOCHS)
    assert params["hidden_dims"] == "[16]"
    assert params["dataset"] == "gauss"
    assert params["n_samples"] == str(len(data[0]))
    assert params["n_features"] == "4"
    assert params["data_shape"] == "160x4"


def test_tracked_fit_logs_losses_per_epoch(tracked, store):
    det, _, run_id, _ = tracked
    client = MlflowClient(store)
    for key, hist_key in (("gan/d_loss", "d_loss"), ("gan/g_loss", "g_loss"), ("gan/g_std_ratio", "g_std_ratio"),
                          ("encoder/e_loss", "e_loss")):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(EPOCHS)), key
        np.testing.assert_allclose([m.value for m in history], det.history_[hist_key][:EPOCHS], rtol=1e-12)
    # held-out fidelity: a step metric at every measured epoch, and the final generator's values
    for key in ("fidelity", "coverage", "density", "precision", "recall"):
        history = sorted(client.get_metric_history(run_id, f"gan/{key}"), key=lambda m: m.step)
        assert [m.step for m in history] == det.history_["fidelity_epoch"], key
        np.testing.assert_allclose([m.value for m in history], det.history_[key], rtol=1e-12)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["fidelity"] == pytest.approx(det.fidelity_["fidelity"], abs=1e-12)
    for key in ("coverage", "parzen_gap", "n_rows"):
        assert metrics[f"fidelity_{key}"] == pytest.approx(det.fidelity_[key], abs=1e-12)


def test_tracked_fit_logs_evaluation_per_component(tracked, store, data):
    from gananomaly.metrics import evaluate_detector

    det, _, run_id, _ = tracked
    _, X_eval, y_eval = data
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    table = evaluate_detector(det, X_eval, y_eval)
    for comp in ("discriminator", "reconstruction", "latent", "knn", "combined"):
        assert metrics[f"auroc_{comp}"] == pytest.approx(table.loc[comp, "auroc"], abs=1e-12)
        assert metrics[f"auprc_{comp}"] == pytest.approx(table.loc[comp, "auprc"], abs=1e-12)
    assert metrics["f1_combined"] == pytest.approx(table.loc["combined", "f1"], abs=1e-12)
    assert "f1_reconstruction" not in metrics  # F1 only where the threshold applies
    assert metrics["fit_time_s"] > 0
    # the generator's Parzen-window log-likelihood of held-out normal rows (finite, bandwidth > 0)
    assert np.isfinite(metrics["parzen_log_likelihood"]) and metrics["parzen_bandwidth"] > 0
    # the threshold drawn on the histogram, and the top columns of the highest-scoring rows
    assert metrics["threshold"] == pytest.approx(-det.offset_, abs=1e-12)
    local = MlflowClient(store).download_artifacts(run_id, "evaluation/top_anomalies_explained.json",
                                                   dst_path=os.getcwd())
    with open(local) as fh:
        logged = pd.read_json(fh, orient="split")
    worst = int(np.argmax(det.score_components(X_eval)["combined"].to_numpy()))
    first = logged[logged["row"] == worst].sort_values("rank")
    expected = det.explain(X_eval[worst : worst + 1], top=3)
    assert list(first["feature"].astype(str)) == list(expected["feature"].astype(str))


def test_tracked_fit_logs_plots_and_model(tracked, store, data):
    det, _, run_id, _ = tracked
    client = MlflowClient(store)
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss_curves.png", "plots/score_histogram.png", "plots/roc_curve.png"}
    local = client.download_artifacts(run_id, "plots/roc_curve.png", dst_path=os.getcwd())
    with open(local, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    model_uri = client.get_run(run_id).data.tags["gananomaly.model_uri"]
    assert model_uri.startswith("models:/m-")
    mlflow.set_tracking_uri(store)
    try:
        loaded = gananomaly.mlflow.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(loaded.score_samples(data[1]), det.score_samples(data[1]), atol=1e-9)


def test_tracked_fit_restores_user_callbacks(tracked):
    det, _, _, recorder = tracked
    assert det.callbacks == (recorder,)
    assert recorder.epochs[:EPOCHS] == [("gan", e) for e in range(EPOCHS)]
    assert ("encoder", EPOCHS - 1) in recorder.epochs


def test_tracked_fit_leaves_caller_tracking_uri_alone(data, store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///callers.db")
    from mlflow.tracking import fluent

    before = mlflow.get_tracking_uri()
    active_experiment = fluent._active_experiment_id
    _, run_id = tracked_fit(small_detector(), data[0], experiment="scope", tracking_uri=store, log_model=False)
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///callers.db"
    assert mlflow.get_tracking_uri() == before
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
    assert not os.path.exists("callers.db")
    assert fluent._active_experiment_id == active_experiment  # the caller's active experiment is untouched


def test_tracked_fit_inside_an_active_run_is_nested(data, store):
    mlflow.set_tracking_uri(store)
    try:
        with mlflow.start_run(experiment_id=MlflowClient().create_experiment("outer")) as parent:
            _, run_id = tracked_fit(small_detector(), data[0], experiment="outer", tracking_uri=store,
                                    log_model=False)
            still_active = mlflow.active_run().info.run_id
    finally:
        mlflow.set_tracking_uri(None)
    assert still_active == parent.info.run_id
    child = MlflowClient(store).get_run(run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED"
    assert MlflowClient(store).get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_run_in_another_store_does_not_name_the_callers_run_as_its_parent(data, store, tmp_path):
    """Inside the caller's run in one store, a tracked fit to another store recorded the
    caller's run id as its parent: a run that store does not have."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'caller.db'}")
    try:
        with mlflow.start_run() as outer:
            _, run_id = tracked_fit(small_detector(), data[0], experiment="elsewhere", tracking_uri=store,
                                    log_model=False)
            assert mlflow.active_run().info.run_id == outer.info.run_id
    finally:
        mlflow.set_tracking_uri(None)
    child = MlflowClient(store).get_run(run_id)
    assert "mlflow.parentRunId" not in child.data.tags and child.info.status == "FINISHED"


def test_tracked_fit_pipeline_on_dataframe(data, store):
    X, X_eval, y_eval = data
    cols = ["temp", "pressure", "flow", "speed"]
    pipe = Pipeline([("scale", StandardScaler()), ("gan", small_detector())])
    model, run_id = tracked_fit(pipe, pd.DataFrame(X, columns=cols), X_eval=pd.DataFrame(X_eval, columns=cols),
                                y_eval=y_eval, experiment="pipeline", tracking_uri=store)
    assert model is pipe
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.params["feature_names"] == "temp,pressure,flow,speed"
    assert run.data.params["pipeline_steps"] == "['scale:StandardScaler', 'gan:GANAnomalyDetector']"
    assert "auroc_combined" in run.data.metrics
    names = client.download_artifacts(run_id, "data/feature_names.json", dst_path=os.getcwd())
    with open(names) as fh:
        assert cols[0] in fh.read()
    # the explained top anomalies name the pipeline's input columns, ranked per row
    local = client.download_artifacts(run_id, "evaluation/top_anomalies_explained.json", dst_path=os.getcwd())
    with open(local) as fh:
        explained = pd.read_json(fh, orient="split")
    assert set(explained["column"]) <= set(cols) and set(explained["rank"]) == {1, 2, 3}
    assert set(explained["row"]) <= set(range(len(X_eval)))
    mlflow.set_tracking_uri(store)
    try:
        pf = mlflow.pyfunc.load_model(run.data.tags["gananomaly.model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    frame = pd.DataFrame(X_eval, columns=cols)
    np.testing.assert_allclose(pf.predict(frame)["score"].to_numpy(), pipe.score_samples(frame), atol=1e-9)


def test_image_shape_logs_sample_and_reconstruction_grids(data, store):
    rng = np.random.RandomState(1)
    X = rng.rand(64, 16)
    _, run_id = tracked_fit(small_detector(), X, X_eval=np.vstack([X[:8], 3 + X[:4]]),
                            y_eval=np.r_[np.zeros(8, int), np.ones(4, int)], experiment="images",
                            tracking_uri=store, image_shape=(1, 4, 4), log_model=False)
    images = {a.path for a in MlflowClient(store).list_artifacts(run_id, "images")}
    assert images == {"images/generated.png", "images/reconstructions.png"}


# ---------------------------------------------------------------------------------- failures
def test_failed_fit_ends_run_failed_and_reraises(data, store):
    X = data[0].copy()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tracked_fit(small_detector(), X, experiment="crash", run_name="nan-input", tracking_uri=store)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("crash")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "NaN" in runs[0].data.tags["gananomaly.error"]
    text = client.download_artifacts(runs[0].info.run_id, "error.txt", dst_path=os.getcwd())
    with open(text) as fh:
        assert "Traceback" in fh.read()
    assert mlflow.active_run() is None


@pytest.mark.parametrize("signame, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", BaseException)])
def test_interrupt_or_termination_during_fit_ends_run_killed(data, store, signame, raised):
    """Ctrl-C and SIGTERM (a scheduler stopping the job) end the run KILLED, as the README
    says; SIGTERM used to leave it RUNNING forever. The previous SIGTERM handler is restored."""
    import signal

    sig = getattr(signal, signame)

    class Interrupt(gananomaly.Callback):
        def on_epoch_end(self, estimator, logs):
            if logs["epoch"] == 1:
                os.kill(os.getpid(), sig)  # a real signal delivered to this process

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(raised) as info:
        tracked_fit(small_detector(callbacks=(Interrupt(),)), data[0], experiment=signame, tracking_uri=store)
    assert signame == "SIGINT" or type(info.value).__name__ == "Terminated"
    assert signal.getsignal(signal.SIGTERM) is before
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(signame).experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert type(info.value).__name__ in runs[0].data.tags["gananomaly.error"]
    # the losses of the epochs completed before the signal are kept (they were sent every 10 epochs)
    history = client.get_metric_history(runs[0].info.run_id, "gan/d_loss")
    assert [m.step for m in history][:1] == [0]
    assert mlflow.active_run() is None


def test_evaluation_failure_after_the_fit_keeps_the_model(data, store, monkeypatch, tmp_path):
    """An error after a successful fit (here: in the evaluation) ends the run FAILED and the
    fitted model is saved to the fallback directory, named in the error."""
    import gananomaly.tracking_log as tracking_log

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(tracking_log, "log_evaluation", broken, raising=True)
    det = small_detector()
    X, X_eval, y_eval = data
    with pytest.raises(RuntimeError, match="evaluation broke") as info:
        tracked_fit(det, X, X_eval=X_eval, y_eval=y_eval, experiment="eval-broke", tracking_uri=store)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "saved to" in notes
    path = notes.split("saved to ")[1].strip("'\" ")
    np.testing.assert_allclose(gananomaly.load(path).score_samples(X_eval), det.score_samples(X_eval), atol=1e-9)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("eval-broke").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_eval_arguments_validated_before_any_run(data, store):
    X, X_eval, y_eval = data
    with pytest.raises(ValueError, match="X_eval and y_eval"):
        tracked_fit(small_detector(), X, X_eval=X_eval, experiment="bad-eval", tracking_uri=store)
    with pytest.raises(ValueError, match="0 \\(normal\\) / 1 \\(anomaly\\)"):
        tracked_fit(small_detector(), X, X_eval=X_eval, y_eval=y_eval + 1, experiment="bad-eval",
                    tracking_uri=store)
    with pytest.raises(TypeError, match="GANAnomalyDetector"):
        tracked_fit(StandardScaler(), X, experiment="bad-eval", tracking_uri=store)
    with pytest.raises(ValueError, match=r"image_shape \(3, 2, 2\) holds 12 values, but one sample of X has 4"):
        tracked_fit(small_detector(), X, image_shape=(3, 2, 2), experiment="bad-eval", tracking_uri=store)
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\), three positive ints, got 'x'"):
        tracked_fit(small_detector(), X, image_shape="x", experiment="bad-eval", tracking_uri=store)
    # an X_eval of another width failed only after the whole fit
    with pytest.raises(ValueError, match=r"X_eval's rows have shape \(3,\), X's \(4,\)"):
        tracked_fit(small_detector(), X, X_eval=X_eval[:, :3], y_eval=y_eval, experiment="bad-eval",
                    tracking_uri=store)
    # extra parameters that would overwrite what the run records (the detector was recorded with the
    # user's epochs), or that MLflow refuses once the run is open
    for extra, match in (({"epochs": "300 (planned)"}, "'epochs' is a parameter the run records itself"),
                         ({"n_samples": 5}, "'n_samples' is a parameter the run records itself"),
                         ({"bad:key?": 1}, "'bad:key\\?' is not a valid MLflow parameter name")):
        with pytest.raises(ValueError, match=match):
            tracked_fit(small_detector(), X, extra_params=extra, experiment="bad-eval", tracking_uri=store)
    with pytest.raises(TypeError, match="experiment must be the MLflow experiment's name \\(a str\\), got NoneType"):
        tracked_fit(small_detector(), X, experiment=None, tracking_uri=store)
    from gananomaly.tracking_log import _check_image_shape

    assert _check_image_shape([1, 2, 2], None) == (1, 2, 2)  # after preprocessing: the width is not X's
    assert MlflowClient(store).get_experiment_by_name("bad-eval") is None
    with pytest.raises(ValueError, match="max_runs must be an integer >= 1, got '5'"):
        compare_runs("read-back", tracking_uri=store, max_runs="5")


def test_unreachable_server_saves_model_locally_and_names_uri(data, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    det = small_detector()
    with pytest.raises(TrackingUnavailableError) as info:
        tracked_fit(det, data[0], experiment="offline", tracking_uri=uri)
    err = info.value
    assert isinstance(err, ConnectionError)
    assert uri in str(err)
    assert str(err.fallback_path) in str(err)
    assert err.fallback_path.is_dir()
    assert err.fallback_path.is_relative_to(tmp_path.resolve())
    assert err.model is det and hasattr(det, "offset_")
    restored = gananomaly.load(err.fallback_path)
    np.testing.assert_allclose(restored.score_samples(data[1]), det.score_samples(data[1]), atol=1e-9)
    # a second failure within the same second: its own directory (it replaced the first model)
    import datetime as dt

    from gananomaly import tracking_store

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.strptime(err.fallback_path.name.split("-")[1], "%Y%m%dT%H%M%S")

    monkeypatch.setattr(tracking_store, "datetime", Frozen)
    other = small_detector(random_state=1)
    with pytest.raises(TrackingUnavailableError) as again:
        tracked_fit(other, data[0][:, :3], experiment="offline", tracking_uri=uri)
    assert again.value.fallback_path != err.fallback_path
    assert gananomaly.load(err.fallback_path).n_features_in_ == data[0].shape[1]
    assert gananomaly.load(again.value.fallback_path).n_features_in_ == 3


def test_store_lost_after_fit_keeps_model_and_fails_run(data, store, monkeypatch):
    import requests

    def broken(*args, **kwargs):
        raise requests.exceptions.ConnectionError("connection reset by peer")

    monkeypatch.setattr(mlflow, "log_figure", broken)
    det = small_detector()
    with pytest.raises(TrackingUnavailableError) as info:
        tracked_fit(det, data[0], experiment="lost", tracking_uri=store)
    assert info.value.fallback_path.is_dir()
    assert hasattr(det, "offset_")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


# ---------------------------------------------------------------------------------- callback
def test_callback_logs_to_the_active_run(data, store):
    mlflow.set_tracking_uri(store)
    try:
        with mlflow.start_run(experiment_id=MlflowClient().create_experiment("callback")) as run:
            det = small_detector(callbacks=(MLflowCallback(flush_every=2),)).fit(data[0])
        history = MlflowClient(store).get_metric_history(run.info.run_id, "gan/g_loss")
    finally:
        mlflow.set_tracking_uri(None)
    assert sorted(m.value for m in history) == sorted(det.history_["g_loss"])


def test_callback_without_run_is_a_clear_error(data):
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        small_detector(callbacks=(MLflowCallback(),)).fit(data[0])


# ---------------------------------------------------------------------------------- comparison
@pytest.fixture(scope="module")
def compared(data, store):
    X, X_eval, y_eval = data
    ids = {}
    for lr in (1e-3, 1e-4):
        _, ids[lr] = tracked_fit(small_detector(learning_rate=lr), X, X_eval=X_eval, y_eval=y_eval,
                                 experiment="compare", run_name=f"lr={lr}", tracking_uri=store, log_model=False)
    return ids


def test_compare_runs_shows_differing_params_sorted(compared, store):
    table = compare_runs("compare", tracking_uri=store)
    assert set(table.index) == set(compared.values())
    assert "learning_rate" in table.columns
    assert "objective" not in table.columns  # same in every run
    for col in ("auroc_discriminator", "auroc_reconstruction", "auroc_combined", "fit_time_s"):
        assert col in table.columns
    assert list(table["auroc_combined"]) == sorted(table["auroc_combined"], reverse=True)
    by_time = compare_runs("compare", tracking_uri=store, sort_by="fit_time_s")
    assert list(by_time["fit_time_s"]) == sorted(by_time["fit_time_s"])
    assert len(compare_runs("compare", tracking_uri=store, max_runs=1)) == 1


def test_a_parameter_named_like_a_column_does_not_overwrite_it(data, store):
    """extra_params={"status": ...} replaced the status column (FINISHED/FAILED) with the
    parameter's values."""
    X = data[0]
    for value in ("mine", "other"):
        tracked_fit(small_detector(), X, experiment="collide", tracking_uri=store, log_model=False,
                    extra_params={"status": value, "run_name": value})
    table = compare_runs("collide", tracking_uri=store, sort_by="fit_time_s")
    assert set(table["status"]) == {"FINISHED"} and set(table["param.status"]) == {"mine", "other"}
    assert set(table["param.run_name"]) == {"mine", "other"}


def test_compare_runs_bad_input(compared, store):
    with pytest.raises(ValueError, match="no experiment named 'nope'"):
        compare_runs("nope", tracking_uri=store)
    with pytest.raises(ValueError, match="available: .*auroc_combined"):
        compare_runs("compare", tracking_uri=store, sort_by="accuracy")
    with pytest.raises(ValueError, match="no MLflow store at sqlite:///missing.db"):
        compare_runs("compare", tracking_uri="sqlite:///missing.db")
    assert not os.path.exists("missing.db")


def test_runs_compare_cli(compared, store, capsys):
    import argparse

    from gananomaly.tracking import register_cli

    # The subcommand as `gananomaly` registers it (built alone, independent of the other command modules).
    parser = argparse.ArgumentParser(prog="gananomaly")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["runs", "compare", "--experiment", "compare", "--tracking-uri", store,
                              "--sort-by", "fit_time_s", "--max", "5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    for run_id in compared.values():
        assert run_id in out
    assert "learning_rate" in out and "auroc_combined" in out
    rows = [line for line in out.splitlines() if any(r in line for r in compared.values())]
    times = compare_runs("compare", tracking_uri=store, sort_by="fit_time_s")
    assert [line.split()[0] for line in rows] == list(times.index)
    args = parser.parse_args(["runs", "compare", "--experiment", "nope", "--tracking-uri", store])
    with pytest.raises(ValueError, match="no experiment named 'nope'"):
        args.func(args)


# ---------------------------------------------------------------------------------- demo
def test_demo_tracking_prints_table_run_and_ui_command(data, store, capsys):
    from gananomaly.demo import demo_tracking

    X, X_eval, y_eval = data
    result = demo_tracking(small_detector(), X, X_eval, y_eval, experiment="demo", tracking_uri=store)
    out = capsys.readouterr().out
    run_id = result["run"]["run_id"]
    assert run_id in out
    assert f"mlflow ui --backend-store-uri {store}" in out
    assert "IsolationForest (reference)" in out and "combined" in out
    n_normal = int((np.asarray(y_eval) == 0).sum())
    assert f"generator fidelity on the {n_normal} normal test rows: " in out  # rows the fit never saw
    assert list(result["table"].columns) == ["auroc", "auprc", "f1"]
    assert MlflowClient(store).get_run(run_id).data.params["dataset"].startswith("sklearn breast_cancer")


def test_image_input_logs_grids_and_serves_arrays(store):
    if "channels" not in GANAnomalyDetector().get_params():
        pytest.skip("this GANAnomalyDetector has no image input")
    rng = np.random.RandomState(0)
    X = rng.rand(48, 1, 16, 16).astype(np.float32)
    X_eval = np.concatenate([X[:8], 3 * rng.rand(4, 1, 16, 16).astype(np.float32)])
    y_eval = np.r_[np.zeros(8, int), np.ones(4, int)]
    det, run_id = tracked_fit(GANAnomalyDetector(epochs=1, random_state=0), X, X_eval=X_eval, y_eval=y_eval,
                              experiment="image-input", tracking_uri=store)
    client = MlflowClient(store)
    assert {a.path for a in client.list_artifacts(run_id, "images")} == {"images/generated.png",
                                                                         "images/reconstructions.png"}
    assert client.get_run(run_id).data.params["data_shape"] == "48x1x16x16"
    mlflow.set_tracking_uri(store)
    try:
        pf = mlflow.pyfunc.load_model(client.get_run(run_id).data.tags["gananomaly.model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(pf.predict(X_eval)["score"].to_numpy(), det.score_samples(X_eval), atol=1e-6)


def test_demo_tracking_without_store_still_reports(data, monkeypatch, capsys):
    from gananomaly.demo import demo_tracking

    X, X_eval, y_eval = data
    uri = f"http://127.0.0.1:{free_port()}"
    result = demo_tracking(small_detector(), X, X_eval, y_eval, experiment="demo", tracking_uri=uri)
    out = capsys.readouterr().out
    assert result["run"] is None
    assert f"warning: MLflow tracking store {uri!r} is unreachable" in out
    assert "(not tracked)" in out and "IsolationForest (reference)" in out
    assert hasattr(result["detector"], "offset_")


def test_local_store_that_cannot_be_created_falls_back_to_a_local_save(data, monkeypatch, tmp_path):
    """A SQLite store in a directory that cannot be created or written (here under /proc) used
    to end in a raw error with nothing saved; now the fit runs and the model is saved locally."""
    monkeypatch.chdir(tmp_path)
    det = small_detector()
    with pytest.raises(TrackingUnavailableError) as info:
        tracked_fit(det, data[0], experiment="ro", tracking_uri="sqlite:////proc/gananomaly-store/mlflow.db")
    assert "sqlite:////proc/gananomaly-store/mlflow.db" in str(info.value)
    assert info.value.fallback_path.is_relative_to(tmp_path.resolve())
    np.testing.assert_allclose(gananomaly.load(info.value.fallback_path).score_samples(data[1]),
                               det.score_samples(data[1]), atol=1e-9)
