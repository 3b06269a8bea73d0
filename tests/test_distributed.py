import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import gananomaly
from gananomaly import GANAnomalyDetector


# WGAN-GP/izif: the critic's gradient penalty differentiates twice through the DDP-wrapped
# critic. GAN/BiGAN: spectral-norm buffers broadcast, generator and encoder trained jointly.
@pytest.mark.slow
@pytest.mark.parametrize("objective,encoder", [("wgan-gp", "izif"), ("gan", "bigan")])
def test_two_gloo_processes_train_in_sync_and_match_single_process_quality(tmp_path, blobs, objective, encoder):
    X_train, X_test, y_test = blobs
    np.save(tmp_path / "X.npy", X_train)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "gananomaly.distributed", "--input", str(tmp_path / "X.npy"), "--output", str(tmp_path / "model"),
           "--epochs", "30", "--batch-size", "32", "--objective", objective, "--encoder", encoder]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 compared a digest of every weight and buffer of all replicas before saving
    assert "trained on 2 processes (gloo, DistributedDataParallel)" in proc.stdout
    assert "on every rank" in proc.stdout
    distributed = gananomaly.load(tmp_path / "model")
    assert distributed.objective_ == (objective if objective != "auto" else "wgan-gp")
    auc_dist = roc_auc_score(y_test, -distributed.score_samples(X_test))
    single = GANAnomalyDetector(epochs=30, batch_size=64, random_state=0, objective=objective,
                                encoder=encoder).fit(X_train)
    auc_single = roc_auc_score(y_test, -single.score_samples(X_test))
    assert auc_dist >= 0.95 and auc_single >= 0.95
    assert abs(auc_dist - auc_single) <= 0.03


@pytest.mark.slow
def test_two_gloo_processes_train_an_image_model_whose_batch_norm_stays_in_sync(tmp_path):
    """Image networks hold batch norm, whose running statistics followed each rank's own batches:
    every distributed image fit ended in "replicas diverged" and saved nothing."""
    rng = np.random.RandomState(0)
    images = (0.5 + 0.1 * rng.randn(40, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "X.npy", images)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "gananomaly.distributed", "--input", str(tmp_path / "X.npy"), "--output", str(tmp_path / "model"),
           "--epochs", "2", "--batch-size", "8", "--backend", "gloo"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on every rank" in proc.stdout
    model = gananomaly.load(tmp_path / "model")
    assert model.image_shape_ == (1, 8, 8)
    assert any("running_mean" in key for key in model.generator_.state_dict())  # batch norm was there to sync
    assert np.isfinite(model.score_samples(images[:4])).all()


def test_distributed_module_refuses_to_run_outside_torchrun(tmp_path):
    from gananomaly.distributed import main

    assert main(["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "m")]) == 2


def test_bad_arguments_input_or_output_are_refused_before_any_rank_trains(tmp_path, monkeypatch, capsys):
    """Options were read without checks (a traceback per rank) and the output was checked only
    after every rank had trained; under torchrun the other ranks then died on a closed peer."""
    import gananomaly.distributed as gd

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(gd.dist, "init_process_group", lambda **kw: 1 / 0)  # never reached
    np.save(tmp_path / "x.npy", np.random.RandomState(0).randn(50, 3))
    for bad in (["--epochs", "abc"], ["--epochs", "0"], ["--batch-size", "0"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            gd.main(["--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "m"), *bad])
        assert exit_.value.code == 2 and f"argument {bad[0]}: must be" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    for inp, out, match in ((tmp_path / "nope.npy", tmp_path / "m", "nope.npy"),
                            (tmp_path / "x.npy", tmp_path / "afile", "cannot save model to")):
        assert gd.main(["--input", str(inp), "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("gananomaly.distributed (rank 0): error: ") and match in err and err.count("\n") == 1
