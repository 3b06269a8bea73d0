"""End to end against real MLflow processes on 127.0.0.1: `mlflow models serve` and `mlflow server`.

Both start a subprocess in its own process group and stop it by that group's id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

import gananomaly.mlflow as gm
from gananomaly import GANAnomalyDetector
from gananomaly.tracking import compare_runs, tracked_fit

pytestmark = pytest.mark.mlflow_server

VENV_BIN = Path(sys.executable).parent
# Start-up is slow on a busy 2-core machine (imports, schema migrations); give it room.
START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_cli() -> str:
    exe = VENV_BIN / "mlflow"
    if not exe.exists():
        pytest.skip(f"no mlflow command next to {sys.executable}")
    return str(exe)


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # `mlflow models serve --env-manager local` execs `uvicorn` from PATH: use this environment's.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def stop(proc: subprocess.Popen) -> None:
    """Stop the process group started for ``proc`` (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftover children
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=15)


@contextlib.contextmanager
def running(cmd: list[str], url: str, log_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in a new session; yield once ``url`` answers 200; always stop it."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[1:3]} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"{cmd[1:3]} did not answer {url} in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(160, 4)
    X_eval = np.vstack([rng.randn(30, 4), 6 + rng.randn(8, 4)])
    y_eval = np.r_[np.zeros(30, dtype=int), np.ones(8, dtype=int)]
    return X, X_eval, y_eval


def test_models_serve_answers_invocations_with_score_samples(data, tmp_path, monkeypatch):
    X, X_eval, _ = data
    cols = ["a", "b", "c", "d"]
    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    det = GANAnomalyDetector(epochs=3, hidden_dims=(16,), random_state=0).fit(pd.DataFrame(X, columns=cols))
    mlflow.set_tracking_uri(store)
    try:
        with mlflow.start_run():
            info = gm.log_model(det, input_example=pd.DataFrame(X[:2], columns=cols))
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    port = free_port()
    cmd = [mlflow_cli(), "models", "serve", "-m", info.model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    frame = pd.DataFrame(X_eval, columns=cols)
    env = server_env(MLFLOW_TRACKING_URI=store)
    with running(cmd, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env):
        body = {"dataframe_split": frame.to_dict(orient="split")}
        resp = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        preds = pd.DataFrame(resp.json()["predictions"])
        bad = requests.post(f"http://127.0.0.1:{port}/invocations",
                            json={"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0]]}}, timeout=60)
        explained = requests.post(f"http://127.0.0.1:{port}/invocations", json={**body, "params": {"explain": 2}},
                                  timeout=60)
        zero = requests.post(f"http://127.0.0.1:{port}/invocations", json={**body, "params": {"explain": 0}},
                             timeout=60)
    np.testing.assert_allclose(preds["score"].to_numpy(), det.score_samples(frame), atol=1e-6)
    np.testing.assert_array_equal(preds["label"].to_numpy(), det.predict(frame))
    comps = det.score_components(frame)
    np.testing.assert_allclose(preds["combined"].to_numpy(), comps["combined"].to_numpy(), atol=1e-6)
    assert bad.status_code == 400  # the signature rejects missing columns
    assert explained.status_code == 200, explained.text  # the signature declares the explain param
    top = pd.DataFrame(explained.json()["predictions"])
    assert set(top["explain_1_column"]) <= set(cols) and "explain_2_contribution" in top
    assert zero.status_code == 400 and "must be a positive int" in zero.text


def test_tracked_fit_over_http_to_real_tracking_server(data, tmp_path, monkeypatch):
    X, X_eval, y_eval = data
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [mlflow_cli(), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
           "--artifacts-destination", str(tmp_path / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No background job runners: this test needs only tracking and artifacts.
    env = server_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with running(cmd, f"{uri}/health", tmp_path / "server.log", env):
        det = GANAnomalyDetector(epochs=3, hidden_dims=(16,), random_state=0)
        model, run_id = tracked_fit(det, X, X_eval=X_eval, y_eval=y_eval, experiment="over-http",
                                    run_name="http-run", tracking_uri=uri)
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "gan/d_loss")
        plots = {a.path for a in client.list_artifacts(run_id, "plots")}
        model_uri = run.data.tags["gananomaly.model_uri"]
        mlflow.set_tracking_uri(uri)
        try:
            loaded = gm.load_model(model_uri)
        finally:
            mlflow.set_tracking_uri(None)
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        table = compare_runs("over-http", tracking_uri=uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "http-run"
    assert run.data.params["epochs"] == "3" and run.data.params["data_shape"] == "160x4"
    assert 0.5 < run.data.metrics["auroc_combined"] <= 1.0
    assert sorted(m.step for m in history) == [0, 1, 2]
    assert plots == {"plots/loss_curves.png", "plots/score_histogram.png", "plots/roc_curve.png"}
    # Artifacts went through the server into its artifacts destination, not the client's cwd.
    assert list((tmp_path / "artifacts").rglob("roc_curve.png"))
    assert not (tmp_path / "mlruns").exists()
    np.testing.assert_allclose(loaded.score_samples(X_eval), model.score_samples(X_eval), atol=1e-9)
    assert list(table.index) == [run_id]
