import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from gananomaly.pipelines.cli import main

import gananomaly
from gananomaly import Callback, GANAnomalyDetector, checkpoint
from gananomaly.checkpoint import CHECKPOINT_NAME, read_checkpoint

PARAMS = dict(epochs=8, encoder_epochs=4, hidden_dims=(16, 16), random_state=0)

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from gananomaly import Callback, GANAnomalyDetector

    class KillAt(Callback):
        def on_epoch_end(self, estimator, logs):
            if (logs["phase"], logs["epoch"]) == (sys.argv[3], int(sys.argv[4])):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a real crash

    X = np.load(sys.argv[1])
    GANAnomalyDetector(epochs=8, encoder_epochs=4, hidden_dims=(16, 16), random_state=0,
                       checkpoint_dir=sys.argv[2], checkpoint_every=2, callbacks=[KillAt()]).fit(X)
    """
)


def _same_threads_env() -> dict:
    """Environment for a subprocess that trains and scores on the thread counts this process
    uses (matrix kernels round by thread count): the scoring count, and the count the
    thread policy picks for training here."""
    import gananomaly.estimator as est
    from gananomaly.defaults import training_threads

    train = training_threads(False, torch.get_num_threads(), est._DEFAULT_THREADS, os.environ)
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "GANANOMALY_NUM_THREADS": str(train)}


@pytest.fixture(scope="module")
def uninterrupted(blobs):
    X_train, X_test, _ = blobs
    return GANAnomalyDetector(**PARAMS).fit(X_train).score_samples(X_test)


@pytest.mark.parametrize("phase,epoch,expected_done", [("gan", 4, (4, 0)), ("encoder", 2, (8, 2))])
def test_sigkilled_fit_resumes_to_the_same_model(tmp_path, blobs, uninterrupted, phase, epoch, expected_done):
    X_train, X_test, _ = blobs
    np.save(tmp_path / "X.npy", X_train)
    ckpt = tmp_path / "ckpt"
    env = _same_threads_env()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "X.npy"), str(ckpt), phase, str(epoch)],
                          env=env)
    assert proc.returncode == -signal.SIGKILL
    state = read_checkpoint(ckpt / CHECKPOINT_NAME)["state"]
    # at most one checkpoint interval (2 epochs) was lost
    assert (state["gan_epoch"], state["enc_epoch"]) == expected_done
    assert [p for p in os.listdir(ckpt) if p != CHECKPOINT_NAME] == []  # no temp files left behind
    det = GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt), checkpoint_every=2).fit(X_train, resume=True)
    np.testing.assert_array_equal(det.score_samples(X_test), uninterrupted)
    assert len(det.history_["d_loss"]) == 8 and len(det.history_["e_loss"]) == 4


def test_resume_without_checkpoint_starts_fresh_and_mismatch_is_refused(tmp_path, blobs, uninterrupted, caplog):
    X_train, X_test, _ = blobs
    ckpt = tmp_path / "ckpt"
    with caplog.at_level("WARNING", logger="gananomaly"):
        det = GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    # a mistyped checkpoint folder started over without a word
    assert [r.getMessage() for r in caplog.records if "no checkpoint in" in r.getMessage()] == [
        f"resume: no checkpoint in {ckpt / CHECKPOINT_NAME}; the fit starts from the beginning"]
    np.testing.assert_array_equal(det.score_samples(X_test), uninterrupted)
    assert (ckpt / CHECKPOINT_NAME).exists()
    with pytest.raises(ValueError, match="different data"):
        GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt)).fit(X_train[:-1], resume=True)
    with pytest.raises(ValueError, match=r"different params\.kappa;"):  # the parameter is named
        GANAnomalyDetector(**{**PARAMS, "kappa": 0.5}, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    with pytest.raises(ValueError, match="different seed"):  # another seed held out other rows
        GANAnomalyDetector(**{**PARAMS, "random_state": 1}, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        GANAnomalyDetector(**PARAMS).fit(X_train, resume=True)


def test_a_fit_without_random_state_resumes_with_its_own_seed(tmp_path, blobs):
    """random_state=None draws a seed per fit; a resume continues with the interrupted fit's
    seed (its held-out rows), not a new one, and a RandomState instance counts by its seed."""
    X_train, X_test, _ = blobs
    ckpt = tmp_path / "ckpt"
    params = dict(epochs=2, encoder_epochs=1, hidden_dims=(16,), checkpoint_dir=str(ckpt))
    first = GANAnomalyDetector(**params).fit(X_train)
    resumed = GANAnomalyDetector(**params).fit(X_train, resume=True)  # every epoch done: the same model
    np.testing.assert_array_equal(resumed.score_samples(X_test), first.score_samples(X_test))
    other = tmp_path / "other"
    GANAnomalyDetector(**{**params, "checkpoint_dir": str(other)}, random_state=np.random.RandomState(1)).fit(X_train)
    with pytest.raises(ValueError, match="different seed"):
        GANAnomalyDetector(**{**params, "checkpoint_dir": str(other)},
                           random_state=np.random.RandomState(2)).fit(X_train, resume=True)


def test_malicious_checkpoint_is_refused(tmp_path, blobs):
    X_train, _, _ = blobs
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # with a valid digest (anyone can compute one): torch's weights-only loader refuses it
    (ckpt / CHECKPOINT_NAME).write_bytes(checkpoint._encode({"format": 2, "state": Boom()}))
    with pytest.raises(ValueError, match="corrupt or unsafe"):
        GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    # a bare pickle (no digest header) is refused before it is read
    torch.save({"format": 1, "state": Boom()}, ckpt / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match="not a gananomaly training checkpoint of format 3.*delete it"):
        GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    assert not marker.exists()
    # a checkpoint of the previous format (its best generator chosen by another fidelity) is refused
    (ckpt / CHECKPOINT_NAME).write_bytes(b"gananomaly-checkpoint 2 sha256=" + b"0" * 64 + b"\n" + b"x" * 100)
    with pytest.raises(ValueError, match="format 3 \\(it was written by another gananomaly version\\)"):
        GANAnomalyDetector(**PARAMS, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)


def test_a_damaged_checkpoint_is_refused_not_resumed(tmp_path, blobs):
    """A flipped bit in checkpoint.pt would resume into a different model: the digest refuses it,
    naming the file; deleting it starts the fit over."""
    X_train, _, _ = blobs
    ckpt = tmp_path / "ckpt"
    params = dict(epochs=2, encoder_epochs=2, hidden_dims=(16,), random_state=0)
    GANAnomalyDetector(**params, checkpoint_dir=str(ckpt), checkpoint_every=1).fit(X_train)
    path = ckpt / CHECKPOINT_NAME
    good = path.read_bytes()
    for pos in (len(good) // 2, len(good) - 100):  # inside the tensors, inside the zip directory
        data = bytearray(good)
        data[pos] ^= 0x04
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=f"{CHECKPOINT_NAME}.*checksum mismatch.*delete it"):
            GANAnomalyDetector(**params, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    path.unlink()
    GANAnomalyDetector(**params, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    assert read_checkpoint(path)["state"]["gan_epoch"] == 2


@pytest.mark.parametrize("forge", ["shape", "rng", "missing", "epoch"])
def test_a_forged_checkpoint_with_a_valid_digest_is_refused_by_name(tmp_path, blobs, forge):
    """A checkpoint rewritten with its fingerprint kept and its digest recomputed resumed into
    torch's own errors ('size mismatch for out.weight', 'Expected a CPUGeneratorImplState',
    KeyError: 'opt_d'), or, with gan_epoch 10**12, into a model reporting 10**12 epochs. Each is
    now refused naming the checkpoint; a FIFO in its place is refused, not waited on."""
    X_train, _, _ = blobs
    ckpt = tmp_path / "ckpt"
    params = dict(epochs=2, encoder_epochs=2, hidden_dims=(16,), random_state=0)
    GANAnomalyDetector(**params, checkpoint_dir=str(ckpt), checkpoint_every=1).fit(X_train)
    payload = read_checkpoint(ckpt / CHECKPOINT_NAME)
    state = payload["state"]
    if forge == "shape":
        key = next(k for k, v in state["generator"].items() if v.dim() == 2)
        state["generator"][key] = torch.zeros(3, 3)
    elif forge == "rng":
        state["rng"] = torch.zeros(3, dtype=torch.uint8)
    elif forge == "missing":
        del state["opt_d"]
    else:
        state["gan_epoch"] = 10**12
    (ckpt / CHECKPOINT_NAME).write_bytes(checkpoint._encode(payload))
    with pytest.raises(ValueError, match=rf"checkpoint .*{CHECKPOINT_NAME}' does not fit this fit .*delete it"):
        GANAnomalyDetector(**params, checkpoint_dir=str(ckpt)).fit(X_train, resume=True)
    if forge == "epoch":
        (ckpt / CHECKPOINT_NAME).unlink()
        os.mkfifo(ckpt / CHECKPOINT_NAME)
        with pytest.raises(ValueError, match="is not a regular file"):
            read_checkpoint(ckpt / CHECKPOINT_NAME)


def test_stale_temporary_checkpoints_are_removed(tmp_path, blobs):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    stale = ckpt / f".{CHECKPOINT_NAME}.abc123.tmp"  # a process killed while writing leaves this
    stale.write_bytes(b"half a checkpoint")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    # a write in flight of another fit on the directory: removing it made that fit fail at its rename
    fresh = ckpt / f".{CHECKPOINT_NAME}.def456.tmp"
    fresh.write_bytes(b"being written")
    (ckpt / "notes.txt").write_text("kept")
    GANAnomalyDetector(epochs=1, encoder_epochs=1, hidden_dims=(8,), random_state=0,
                       checkpoint_dir=str(ckpt)).fit(blobs[0][:100])
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([CHECKPOINT_NAME, "notes.txt", fresh.name])


def test_cli_fit_killed_by_parent_then_resumed(tmp_path, blobs):
    """The CLI fit is SIGKILLed from outside once a checkpoint exists, then resumed."""
    X_train, X_test, _ = blobs
    np.save(tmp_path / "X.npy", X_train)
    ckpt, model = tmp_path / "ckpt", tmp_path / "model"
    args = ["--input", str(tmp_path / "X.npy"), "--epochs", "40", "--seed", "0",
            "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]
    # The killed fit and its in-process continuation must use the same number of threads:
    # matrix kernels round differently with another thread count.
    env = _same_threads_env()
    proc = subprocess.Popen([sys.executable, "-m", "gananomaly.pipelines.cli", "fit", *args, "--output", str(model)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 120
        while not (ckpt / CHECKPOINT_NAME).exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    if proc.returncode == 0:
        pytest.skip("the fit finished before it could be killed")
    assert not model.exists()  # no half-written model
    assert main(["fit", *args, "--output", str(model), "--resume"]) == 0
    assert main(["fit", *args, "--checkpoint-dir", str(tmp_path / "fresh"), "--output", str(tmp_path / "ref")]) == 0
    resumed, ref = gananomaly.load(model), gananomaly.load(tmp_path / "ref")
    np.testing.assert_array_equal(resumed.score_samples(X_test), ref.score_samples(X_test))


def test_divergence_is_reported_with_the_epoch(blobs):
    X = blobs[0] * 1e18  # standardised inside, so scale alone cannot break it ...
    det = GANAnomalyDetector(epochs=3, learning_rate=1e6, objective="wgan-gp", gp_weight=1e12, random_state=0)
    with pytest.raises(FloatingPointError, match=r"diverged: .* epoch \d"):
        det.fit(X)  # ... but absurd optimiser settings do


def test_generator_collapse_is_warned_with_the_epoch(blobs, monkeypatch):
    import gananomaly.training as training

    X_train = blobs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", training.GeneratorCollapseWarning)
        GANAnomalyDetector(epochs=3, random_state=0).fit(X_train)  # a healthy generator: no warning
    # A generator whose output weights are frozen at zero produces one constant sample.
    original = training.Trainer._gan_phase

    def collapsed(self):
        with torch.no_grad():
            self.gen.out.weight.zero_()
            self.gen.out.weight.requires_grad_(False)
        original(self)

    monkeypatch.setattr(training.Trainer, "_gan_phase", collapsed)
    with pytest.warns(training.GeneratorCollapseWarning, match=r"collapsed: at GAN epoch 2"):
        GANAnomalyDetector(epochs=3, random_state=0).fit(X_train)


def test_resume_with_early_stopping_keeps_the_best_generator(tmp_path, blobs, monkeypatch):
    """The best generator so far, the patience count and the stop decision are part of the
    checkpoint: an interrupted fit that stops early resumes to the model an uninterrupted fit
    makes (same stopping epoch, same kept generator, same scores)."""
    import gananomaly.defaults as defaults

    monkeypatch.setattr(defaults, "EVAL_STEPS", 18)  # measure every 2 epochs of 9 batches
    X_train, X_test, _ = blobs
    params = dict(epochs=80, encoder_epochs=2, early_stopping=True, n_iter_no_change=3, hidden_dims=(16, 16),
                  random_state=0)
    full = GANAnomalyDetector(**params).fit(X_train)
    assert full.n_epochs_ < 80  # it did stop early...
    assert full.fidelity_["fidelity"] == pytest.approx(max(full.history_["fidelity"]), abs=1e-12)  # ...kept the best

    class StopAt(Callback):
        def on_epoch_end(self, estimator, logs):
            if logs["phase"] == "gan" and logs["epoch"] == full.n_epochs_ - 3:
                raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        GANAnomalyDetector(**params, checkpoint_dir=str(ckpt), checkpoint_every=2, callbacks=[StopAt()]).fit(X_train)
    det = GANAnomalyDetector(**params, checkpoint_dir=str(ckpt), checkpoint_every=2).fit(X_train, resume=True)
    assert det.n_epochs_ == full.n_epochs_
    assert det.history_ == full.history_ and det.fidelity_ == full.fidelity_
    np.testing.assert_array_equal(det.score_samples(X_test), full.score_samples(X_test))
