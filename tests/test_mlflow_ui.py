"""The MLflow UI on the SQLite store that tracked_fit writes, read by headless Chromium.

Needs the Debian packages ``chromium`` (and ``chromium-driver`` for WebDriver users); skipped
without them. Chromium's ``--dump-dom`` prints the DOM after the React app rendered, within
``--virtual-time-budget`` of page time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from gananomaly import GANAnomalyDetector
from gananomaly.tracking import tracked_fit

pytestmark = pytest.mark.ui

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 240


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("Chromium is not installed (apt-get install -y chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_text(browser: str, url: str, profile: Path) -> str:
    """The rendered page as text (scripts, styles and tags stripped)."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, timeout=180, start_new_session=True)
    dom = proc.stdout.decode("utf-8", "replace")
    assert dom.strip(), f"chromium printed no DOM (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}"
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def test_mlflow_ui_lists_the_tracked_run(tmp_path, monkeypatch):
    browser = chromium()
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    rng = np.random.RandomState(0)
    X = rng.randn(120, 4)
    X_eval, y_eval = np.vstack([X[:20], 6 + X[:5]]), np.r_[np.zeros(20, int), np.ones(5, int)]
    run_name = "ui-visible-run-7f3a"
    _, run_id = tracked_fit(GANAnomalyDetector(epochs=2, hidden_dims=(16,), random_state=0), X, X_eval=X_eval,
                            y_eval=y_eval, experiment="ui-check", run_name=run_name, tracking_uri=store,
                            log_model=False)
    exp_id = MlflowClient(store).get_experiment_by_name("ui-check").experiment_id

    port = free_port()
    # The command the README gives, on the same store.
    cmd = [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = tmp_path / "ui.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow ui exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        runs_page = page_text(browser, f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs", tmp_path / "p1")
        run_page = page_text(browser, f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{run_id}",
                             tmp_path / "p2")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    assert "ui-check" in runs_page
    assert run_name in runs_page, runs_page[:2000]
    assert "1 matching run" in runs_page
    for text in (run_name, "auroc_combined", "gan/d_loss", "hidden_dims"):
        assert text in run_page, text
