"""Damaged or hostile model files: every one is refused with a ValueError naming the model and
the key or tensor at fault, before anything large is allocated, or loads and scores finitely."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gananomaly
from gananomaly import GANAnomalyDetector, model_dir, persistence
from gananomaly.model_format import RECORD_DIGEST_KEY, with_record_digest
from gananomaly.persistence import CONFIG_NAME, DIGEST_KEY, WEIGHTS_NAME

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return rng.randn(60, 4), rng.randn(20, 4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = GANAnomalyDetector(epochs=2, encoder_epochs=2, random_state=0).fit(data[0])
    path = tmp_path_factory.mktemp("hostile") / "model"
    det.save(path)
    return path, det.score_samples(data[1])


def _copy(saved, tmp_path: Path, name: str = "m") -> Path:
    dst = tmp_path / name
    shutil.copytree(saved[0], dst)
    return dst


def _edit_config(path: Path, edit, *, fix_digest: bool = True) -> Path:
    """Edit the config; with ``fix_digest`` also its record digest (an author who forges both:
    what every other check must then refuse)."""
    config = json.loads((path / CONFIG_NAME).read_text())
    edit(config)
    if fix_digest and RECORD_DIGEST_KEY in config:
        config = with_record_digest(config)
    (path / CONFIG_NAME).write_text(json.dumps(config))
    return path


def _edit_weights(path: Path, edit, *, fix_digest: bool = True) -> Path:
    """Rewrite the weights; with ``fix_digest`` also the digest (an author who forges both)."""
    tensors = load_file(path / WEIGHTS_NAME)
    edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / WEIGHTS_NAME)
    if fix_digest:
        digest = hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()
        _edit_config(path, lambda c: c.update({DIGEST_KEY: digest}))
    return path


def _refused(path: Path, match: str) -> ValueError:
    with pytest.raises(ValueError, match=match) as info:
        gananomaly.load(path)
    assert str(path) in str(info.value)
    return info.value


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        config = config[key]
    config[last] = value


# ------------------------------------------------------------------ silently wrong scores


@pytest.mark.parametrize("name,edit,match", [
    ("broadcast_scale", lambda t: t.update({"input.scale": torch.ones(1, dtype=torch.float64)}),
     r"input.scale.*shape \(1,\), expected \(4\)"),
    ("negative_scale", lambda t: t.update({"input.scale": -t["input.scale"]}), r"input.scale.*positive"),
    ("zero_scale", lambda t: t.update({"input.scale": 0 * t["input.scale"]}), r"input.scale.*positive"),
    ("nan_latent_factor", lambda t: t["score.latent_factor"].__setitem__((0, 0), float("nan")),
     r"score.latent_factor.*non-finite"),
    ("inf_weight", lambda t: t["generator.out.weight"].__setitem__((0, 0), float("inf")),
     r"generator.out.weight.*non-finite"),
    ("float32_scaler", lambda t: t.update({"input.mean": t["input.mean"].float()}), r"input.mean.*dtype F32"),
    ("wrong_generator_shape", lambda t: t.update({"generator.out.weight": torch.zeros(4, 7)}),
     r"generator.out.weight.*shape"),
    ("extra_tensor", lambda t: t.update({"evil.payload": torch.zeros(3)}), r"evil.payload.*not a tensor"),
    ("missing_tensor", lambda t: t.pop("score.knn_bank"), r"score.knn_bank.*missing"),
    ("huge_knn_bank", lambda t: t.update({"score.knn_bank": torch.zeros(5000, t["score.knn_bank"].shape[1])}),
     r"knn bank.*rows"),
    # the local k-NN term divides by these: a missing, short, zero or negative one is refused
    ("missing_knn_own", lambda t: t.pop("score.knn_own"), r"score.knn_own.*missing"),
    ("short_knn_own", lambda t: t.update({"score.knn_own": t["score.knn_own"][:-1].clone()}),
     r"score.knn_own.*one value per bank row"),
    ("zero_knn_own", lambda t: t["score.knn_own"].__setitem__(0, 0.0), r"score.knn_own.*positive"),
    ("negative_knn_own", lambda t: t.update({"score.knn_own": -t["score.knn_own"]}), r"score.knn_own.*positive"),
    # positive but not what the bank gives: tiny (the term blown up) or huge (the term switched off)
    ("tiny_knn_own", lambda t: t["score.knn_own"].__setitem__(0, 1e-30), r"score.knn_own.*does not match the knn bank"),
    ("huge_knn_own", lambda t: t.update({"score.knn_own": t["score.knn_own"] * 1e30}),
     r"score.knn_own.*does not match the knn bank"),
])
def test_tampered_tensors_are_refused(saved, tmp_path, name, edit, match):
    _refused(_edit_weights(_copy(saved, tmp_path), edit), match)


@pytest.mark.parametrize("key,value,match", [
    ("fitted.score_config.scale.latent", float("nan"), r"scale.latent.*finite"),
    ("fitted.score_config.scale.knn", -1.0, r"scale.knn.*positive"),
    ("fitted.score_config.scale.knn", 0, r"scale.knn.*positive"),
    ("fitted.score_config.loc.discriminator", "0.1", r"loc.discriminator.*must be a number"),
    ("fitted.score_config.loc.discriminator", float("inf"), r"loc.discriminator.*finite"),
    ("fitted.offset_", float("nan"), r"offset_.*finite"),
    ("fitted.offset_", float("-inf"), r"offset_.*finite"),
    ("fitted.offset_", True, r"offset_.*must be a number"),
    ("fitted.score_config.kappa", float("nan"), r"kappa.*finite"),
    ("fitted.score_config.refine_lr", 0.0, r"refine_lr.*positive"),
    ("fitted.score_config.joint", True, r"score_config.joint.*arch.joint"),
    ("fitted.score_config.n_refine_steps", 1_000_000_000, r"n_refine_steps.*between 0 and 10000"),
    ("fitted.score_config.n_refine_steps", 5.0, r"n_refine_steps.*integer"),
    ("params.n_refine_steps", 1_000_000_000, r"params.n_refine_steps.*between"),
    ("params.epochs", True, r"params.epochs.*boolean"),
    ("params.latent_weight", float("inf"), r"params.latent_weight.*finite"),
    ("params.objective", "evil", r"objective"),
    ("params.evil", 1, r"params.evil.*not a known key"),
    ("params.callbacks", None, r"params.callbacks.*not a known key"),
    ("evil", 1, r"'evil' is not a known key"),
    ("fitted.evil", 1, r"fitted.evil.*not a known key"),
    ("fitted.score_config.evil", 1, r"score_config.evil.*not a known key"),
    ("fitted.score_config.loc.evil", 1, r"loc.evil.*not a known key"),
    ("fitted.score_config.scale.knn_local", 0.0, r"scale.knn_local.*positive"),
    ("fitted.score_config.loc.knn_local", None, r"loc.knn_local.*must be a number"),
    ("fitted.extra.evil", 1, r"extra.evil.*not a known key"),
    ("arch.evil", 1, r"arch.evil.*not a known key"),
    ("format_version", -7, r"format_version.*positive integer"),
    ("format_version", 2.0, r"format_version.*must be an integer, got a number 2.0"),
    ("format_version", "4", r"format_version.*must be an integer"),
    ("fitted.feature_names_in_", ["a", "b"], r"feature_names_in_.*between 4 and 4 entries"),
    ("fitted.feature_names_in_", ["a", "a", "b", "c"], r"feature_names_in_.*repeat"),
    ("fitted.n_features_in_", 4.0, r"n_features_in_.*integer"),
    ("fitted.n_features_in_", 5, r"n_features_in_.*arch.n_features"),
    ("arch.n_features", 5, r"n_features_in_.*arch.n_features"),
    ("arch.joint", 1, r"arch.joint.*true or false"),
    ("arch.kind", "lstm", r"arch.kind"),
    ("arch.hidden_dims", [-5, 128], r"hidden_dims\[0\].*between 1 and"),
    ("arch.hidden_dims", [], r"hidden_dims.*entries"),
    ("arch.hidden_dims", [128, 128.0], r"hidden_dims\[1\].*integer"),
    ("arch.latent_dim", -1, r"latent_dim.*between"),
    ("arch.latent_dim", 5, r"tensor 'generator.body.0.weight'.*shape \(128, 4\), expected \(128, 5\)"),
    ("arch.hidden_dims", [64, 64], r"shape"),
    ("arch.hidden_dims", [200000, 200000], r"parameters, more than"),
    ("history.d_loss", "x", r"history.d_loss.*list"),
    ("history", [], r"history.*JSON object"),
    ("fitted.extra.objective", "evil", r"extra.objective.*one of"),
    ("fitted.extra.image_shape", [True, 2, 2], r"image_shape\[0\].*integer"),
    ("fitted.score_config.refine_lr", 1e300, r"refine_lr.*between"),
    # statistics a fit never gives: scores of -1e299, or not finite at scoring
    ("fitted.score_config.scale.knn", 1e-300, r"scale\.knn' is 1e-300, below 0\.001 of its location"),
    ("fitted.score_config.loc.knn", 1e308, r"scale\.knn' is .*, below 0\.001 of its location 1e\+308"),
    ("params.learning_rate", 1e300, r"learning_rate"),
    (DIGEST_KEY, "0" * 63, r"weights_sha256.*64"),
    ("library_version", 7, r"library_version.*string"),
])
def test_tampered_config_is_refused(saved, tmp_path, key, value, match):
    _refused(_edit_config(_copy(saved, tmp_path), lambda c: _set(c, key, value)), match)


def test_refusals_are_fast_and_allocate_nothing(saved, tmp_path):
    """A few-KB config asking for 3 x 15000 x 15000 weights (2.7 GB) or a billion refinement
    steps is refused in well under a second, before the networks are built."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i, (key, value) in enumerate([("arch.hidden_dims", [15000, 15000]),
                                      ("fitted.score_config.n_refine_steps", 1_000_000_000)]):
        path = _edit_config(_copy(saved, tmp_path, f"m{i}"), lambda c, k=key, v=value: _set(c, k, v))
        start = time.perf_counter()
        _refused(path, "parameters, more than|n_refine_steps")
        assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 300 * 1024  # KiB: far below 2.7 GB


def test_deeply_nested_config_is_a_clean_error(saved, tmp_path):
    path = _copy(saved, tmp_path)
    text = (path / CONFIG_NAME).read_text()
    (path / CONFIG_NAME).write_text(text.replace('"history": {', '"history": {"deep": ' + "[" * 200000 + "]" * 200000
                                                 + ", ", 1))
    _refused(path, "corrupt config.json.*nested too deeply")
    (path / CONFIG_NAME).write_text(text.replace('"history": {', '"history": {"deep": [' + "[" * 50 + "]" * 50
                                                 + "], ", 1))
    _refused(path, "config.json checksum mismatch: its record_sha256 does not match its content")
    _edit_config(path, lambda c: None)  # the edit with its digest forged too
    _refused(path, r"history.deep\[0\].*must be a number")


@pytest.mark.parametrize("key, value", [("refine_lr", 1e308), ("scale.knn", 5e-324)])
def test_a_file_whose_values_pass_every_bound_but_give_nan_scores_is_refused_at_scoring(saved, tmp_path, data,
                                                                                      key, value):
    """refine_lr 1e308 with refinement steps, or a score scale of 1e-308, passed the checks and
    scored NaN or infinity, which predict labelled inliers. Scoring now refuses non-finite
    scores, naming the rows."""
    path = _copy(saved, tmp_path)

    def edit(c):
        sc = c["fitted"]["score_config"]
        sc["n_refine_steps"] = 3
        c["params"]["n_refine_steps"] = 3
        if key == "refine_lr":
            sc["refine_lr"] = c["params"]["refine_lr"] = value
        else:
            sc["scale"]["knn"] = value

    _edit_config(path, edit)
    try:
        det = gananomaly.load(path)
    except ValueError:
        return  # refused at load: as good
    with pytest.raises(ValueError, match=r"score of row indices 0, 1, 2, 3, 4 \.\.\. is not finite"):
        det.predict(data[1])


def test_a_model_file_does_not_decide_where_a_refit_writes(saved, tmp_path, data):
    """params.checkpoint_dir of a loaded model was restored: a refit created that path (any
    path a file named) and wrote and cleaned checkpoints there."""
    path = _copy(saved, tmp_path)
    target = tmp_path / "elsewhere" / "deep"
    _edit_config(path, lambda c: c["params"].update(checkpoint_dir=str(target)))
    det = gananomaly.load(path)
    assert det.checkpoint_dir is None
    det.set_params(epochs=1, encoder_epochs=1).fit(data[0])
    assert not (tmp_path / "elsewhere").exists()
    det.set_params(checkpoint_dir=str(tmp_path / "ck")).save(tmp_path / "again")  # nor is the path saved
    assert json.loads((tmp_path / "again" / CONFIG_NAME).read_text())["params"]["checkpoint_dir"] is None


@pytest.mark.parametrize("edit", ["value", "downgrade"])
def test_an_edited_or_damaged_config_is_refused_by_its_record_digest(saved, tmp_path, data, edit):
    """config.json had no checksum of its own: a score statistic edited from 0.58 to 50 (or a
    digit damaged) loaded and every score moved. Since format 5 the record carries the digest
    of its content; a file claiming an older format must not carry the newer keys."""
    path = _copy(saved, tmp_path)
    if edit == "value":
        _edit_config(path, lambda c: c["fitted"]["score_config"]["loc"].update(knn=50.0), fix_digest=False)
        _refused(path, "config.json checksum mismatch: its record_sha256 does not match its content")
    else:  # claim format 4, keep the rest: the digest no longer matches the content
        _edit_config(path, lambda c: c.update(format_version=4), fix_digest=False)
        _refused(path, "config.json checksum mismatch")
    untouched = _copy(saved, tmp_path, "ok")
    np.testing.assert_array_equal(gananomaly.load(untouched).score_samples(data[1]), saved[1])


def test_oversized_files_are_refused_before_reading(saved, tmp_path):
    path = _copy(saved, tmp_path)
    with open(path / WEIGHTS_NAME, "ab") as fh:
        fh.truncate((path / WEIGHTS_NAME).stat().st_size + 64 * 2**20)  # sparse: costs no disk
    _refused(path, "model.safetensors.*larger than")


@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME, "lapgan.json", "pipeline.json"])
def test_a_fifo_or_device_in_a_model_directory_is_refused_not_waited_on(saved, tmp_path, name):
    """A FIFO under any name the load probes (even one this model does not use) hung the load
    forever: the open waited for a writer. Opened without blocking, it is refused by name; so
    is a device such as /dev/zero behind a link. The model is never treated as a save target."""
    import subprocess
    import sys

    path = _copy(saved, tmp_path)
    (path / name).unlink(missing_ok=True)
    os.mkfifo(path / name)
    code = ("import gananomaly, sys\nfrom pathlib import Path\nfrom gananomaly import model_dir\n"
            "model_dir._is_model_dir(Path(sys.argv[1]))\n"  # what a save over it asks first
            "try:\n    gananomaly.load(sys.argv[1])\nexcept ValueError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert f"{name}' is not a regular file" in proc.stdout, proc.stdout + proc.stderr
    device = _copy(saved, tmp_path, "dev")
    (device / WEIGHTS_NAME).unlink()
    (device / WEIGHTS_NAME).symlink_to("/dev/zero")
    _refused(device, "model.safetensors' is not a regular file")


def test_what_a_killed_save_left_is_removed_by_the_next_save(saved, tmp_path, data):
    """A save killed with -9 left '.m.<random>.tmp' (the half-written model) or the previous
    model on its way out, for ever. The next save to that path removes such directories of
    dead processes once 15 minutes old (another machine's: a day); a running save's directory
    (a live process) stays, and so does a young one (a process of another PID namespace looks
    dead from here). A model name of 250
    characters saved (the temporary name was too long for the system)."""
    import subprocess
    import sys

    det = gananomaly.load(saved[0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    from gananomaly._atomic import _host_tag

    host = _host_tag()
    left = [tmp_path / f".m.{host}-{dead}-abc123.tmp", tmp_path / f".m.{host}-{dead}-def456.old"]
    running = tmp_path / f".m.{host}-{os.getpid()}-ghi789.tmp"
    other_model = tmp_path / f".m2.{host}-{dead}-jkl012.tmp"
    recent = tmp_path / f".m.{host}-{dead}-mno345.tmp"  # gone, but young: maybe a live save of a container
    foreign = tmp_path / ".m.abcdef-1-pqr678.tmp"  # another machine's, a day old
    for d in (*left, running, other_model, recent, foreign):
        d.mkdir()
        (d / CONFIG_NAME).write_text("{}")
    hour_ago = time.time() - 3600
    for d in (*left, running, other_model):
        os.utime(d, (hour_ago, hour_ago))
    os.utime(foreign, (hour_ago - 86400, hour_ago - 86400))
    det.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", running.name, other_model.name, recent.name])
    long = tmp_path / ("x" * 250)
    det.save(long)
    np.testing.assert_array_equal(gananomaly.load(long).score_samples(data[1]), saved[1])


# ----------------------------------------------------------------------- checksums


def test_a_flipped_bit_in_the_weights_is_a_checksum_mismatch(saved, tmp_path):
    path = _copy(saved, tmp_path)
    data = bytearray((path / WEIGHTS_NAME).read_bytes())
    data[-5] ^= 0x01  # a bit of a knn-bank float: still finite, shapes unchanged
    (path / WEIGHTS_NAME).write_bytes(bytes(data))
    _refused(path, "model.safetensors checksum mismatch")


def test_every_single_byte_flip_in_the_weights_is_refused(saved, tmp_path):
    path = _copy(saved, tmp_path)
    good = (path / WEIGHTS_NAME).read_bytes()
    rng = np.random.RandomState(0)
    for pos in rng.choice(len(good), 40, replace=False):
        data = bytearray(good)
        data[pos] ^= 1 << rng.randint(8)
        (path / WEIGHTS_NAME).write_bytes(bytes(data))
        with pytest.raises(ValueError, match="not a valid gananomaly model"):
            gananomaly.load(path)


def _before_local_knn(path: Path) -> Path:
    """The model as a gananomaly before the local k-NN term wrote it: format 5, no bank rows'
    own distances, no statistics of the local ratio."""
    _edit_weights(path, lambda t: t.pop("score.knn_own"))

    def edit(config):
        config["format_version"] = 5
        for part in ("loc", "scale"):
            config["fitted"]["score_config"][part].pop("knn_local")
    return _edit_config(path, edit)


def _distance_alone_scores(saved, data) -> np.ndarray:
    """What the saved model scores with its knn term the distance alone (older formats' term)."""
    det = gananomaly.load(saved[0])
    det.score_config_.knn_own = None
    for part in (det.score_config_.loc, det.score_config_.scale):
        part.pop("knn_local")
    return det.score_samples(data[1])


def test_the_digest_is_required_from_format_4_and_format_3_tables_still_load(saved, tmp_path, data):
    path = _edit_config(_before_local_knn(_copy(saved, tmp_path)), lambda c: c.pop(DIGEST_KEY))
    _refused(path, "weights_sha256.*missing.*save the model again")
    _edit_config(path, lambda c: c.update(format_version=3))
    np.testing.assert_array_equal(gananomaly.load(path).score_samples(data[1]), _distance_alone_scores(saved, data))


def test_a_model_of_an_older_format_saves_again_in_that_format(saved, tmp_path, data):
    old = gananomaly.load(_before_local_knn(_copy(saved, tmp_path)))
    old.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / CONFIG_NAME).read_text())["format_version"] == 5
    np.testing.assert_array_equal(gananomaly.load(tmp_path / "again").score_samples(data[1]),
                                  old.score_samples(data[1]))


def test_format_5_models_load_and_score_their_knn_term_as_the_distance_alone(saved, tmp_path, data):
    path = _before_local_knn(_copy(saved, tmp_path))
    old = gananomaly.load(path)
    assert old.score_config_.knn_own is None
    expected = _distance_alone_scores(saved, data)
    np.testing.assert_array_equal(old.score_samples(data[1]), expected)
    assert not np.array_equal(expected, saved[1])  # the local term moves the scores: the test sees which ran
    # a format-5 file holding the local term's parts, or a format-6 one without them, is refused
    _refused(_edit_config(_copy(saved, tmp_path, "a"), lambda c: c.update(format_version=5)),
             r"loc.knn_local.*not a known key")
    _refused(_edit_weights(_copy(saved, tmp_path, "b"), lambda t: t.pop("score.knn_own")), r"score.knn_own.*missing")


def test_pipeline_preprocessing_is_checksummed(tmp_path, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(epochs=2, encoder_epochs=2, random_state=0))
        pipe.fit(data[0])
    persistence.save(pipe, tmp_path / "p")
    np.testing.assert_array_equal(gananomaly.load(tmp_path / "p").score_samples(data[1]), pipe.score_samples(data[1]))
    prep = tmp_path / "p" / persistence.PREPROCESSING_NAME
    raw = bytearray(prep.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    prep.write_bytes(bytes(raw))
    _refused(tmp_path / "p", "preprocessing.skops checksum mismatch")
    # a detector step named like a preprocessing step loaded into a pipeline of two same-named steps
    persistence.save(pipe, tmp_path / "q")
    meta = json.loads((tmp_path / "q" / persistence.PIPELINE_CONFIG).read_text())
    (tmp_path / "q" / persistence.PIPELINE_CONFIG).write_text(json.dumps(with_record_digest(
        {**meta, "detector_step": "standardscaler"})))
    _refused(tmp_path / "q", "detector_step' names a preprocessing step")
    (tmp_path / "q" / persistence.PREPROCESSING_NAME).unlink()
    (tmp_path / "q" / persistence.PREPROCESSING_NAME).mkdir()
    _refused(tmp_path / "q", "preprocessing.skops is a directory, not a file")
    # a preprocessing of another width, digests forged to match, loaded and failed at scoring
    import skops.io as sio
    from sklearn.preprocessing import PolynomialFeatures

    persistence.save(pipe, tmp_path / "w")
    other = sio.dumps(make_pipeline(PolynomialFeatures(2)).fit(data[0]))
    (tmp_path / "w" / persistence.PREPROCESSING_NAME).write_bytes(other)
    meta = json.loads((tmp_path / "w" / persistence.PIPELINE_CONFIG).read_text())
    meta[persistence.PREPROCESSING_DIGEST_KEY] = hashlib.sha256(other).hexdigest()
    (tmp_path / "w" / persistence.PIPELINE_CONFIG).write_text(json.dumps(with_record_digest(meta)))
    _refused(tmp_path / "w", r"preprocessing\.skops gives 15 features, but the detector in detector/ takes 4")


# ------------------------------------------------------------------------------ saving


def test_save_refuses_to_replace_what_is_not_a_model(saved, tmp_path):
    det = gananomaly.load(saved[0])
    blocker = tmp_path / "notes.txt"
    blocker.write_text("precious")
    with pytest.raises(ValueError, match="not a gananomaly model"):
        det.save(blocker)
    assert blocker.read_text() == "precious"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2,3")
    with pytest.raises(ValueError, match="not a gananomaly model; refusing"):
        det.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["data.csv"]
    # another library's model laid out like ours (config.json + model.safetensors)
    other = tmp_path / "hf"
    other.mkdir()
    (other / CONFIG_NAME).write_text('{"model_type": "bert"}')
    (other / WEIGHTS_NAME).write_bytes(b"x")
    with pytest.raises(ValueError, match="not a gananomaly model"):
        det.save(other)
    assert (other / CONFIG_NAME).read_text() == '{"model_type": "bert"}'
    # an empty directory and an existing model are replaced
    (tmp_path / "empty").mkdir()
    det.save(tmp_path / "empty")
    det.save(tmp_path / "empty")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "folder", "hf", "notes.txt"]


def test_concurrent_saves_and_loads_of_one_path(saved, tmp_path, data):
    """Writers racing on one path all succeed and leave one whole model; a reader meanwhile
    always finds a whole model (old or new), never a missing or mixed one."""
    base = gananomaly.load(saved[0])
    models = []
    for shift in range(3):
        m = gananomaly.load(saved[0])
        m.offset_ = base.offset_ + shift  # tell them apart by the offset
        models.append(m)
    path = tmp_path / "m"
    models[0].save(path)
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(m):
        try:
            for _ in range(8):
                m.save(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read():
        while not stop.is_set():
            try:
                assert gananomaly.load(path).offset_ in {m.offset_ for m in models}
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(m,)) for m in models]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    swaps = _exchange_supported(tmp_path)
    assert not [e for e in errors if swaps or not isinstance(e, FileNotFoundError)], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary directories left
    assert gananomaly.load(path).offset_ in {m.offset_ for m in models}


def test_a_slow_load_during_repeated_saves_reads_one_whole_model(saved, tmp_path, data, monkeypatch):
    """A load slower than the interval between saves still returns one save's model: its
    files are all opened before any is read (reading the config of one save and the weights
    of the next used to fail the checksum on every attempt)."""
    a = gananomaly.load(saved[0])
    b = gananomaly.load(saved[0])
    with torch.no_grad():  # other weights: a mixed read would fail the checksum
        for param in b.generator_.parameters():
            param.add_(0.01)
    expected = {id(m): m.score_samples(data[1][:4]) for m in (a, b)}
    path = tmp_path / "m"
    a.save(path)
    real = persistence.Expected

    def slow(*args, **kwargs):  # between reading the config and the weights
        time.sleep(0.03)
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence, "Expected", slow)
    stop, errors = threading.Event(), []

    def write():
        i = 0
        while not stop.is_set():
            try:
                (a, b)[i % 2].save(path)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            i += 1
            time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(6):
            scores = gananomaly.load(path).score_samples(data[1][:4])
            assert any(np.array_equal(scores, s) for s in expected.values())
    finally:
        stop.set()
        writer.join()
    assert not errors, errors


def _exchange_supported(tmp_path: Path) -> bool:
    a, b = tmp_path / ".xa", tmp_path / ".xb"
    a.mkdir()
    b.mkdir()
    try:
        return model_dir.exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def test_a_model_that_would_not_load_back_is_not_saved(saved, tmp_path):
    det = gananomaly.load(saved[0])
    with pytest.raises(ValueError, match="finite"):
        det.offset_ = float("nan")  # a threshold is checked when it is set
    det.score_config_.scale["latent"] = -1.0
    with pytest.raises(ValueError, match="would not load back.*scale"):
        det.save(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_an_image_model_claiming_a_huge_input_side_is_refused(tmp_path):
    """An image model's input shape sizes what generate() and anomaly_map() allocate (the
    networks' own side is bounded apart from it): a forged 46000 x 46000 input (8.5 GB per
    generated image) is refused at load, naming the key."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(
            np.random.RandomState(0).rand(16, 8, 8))
    path = tmp_path / "image"
    det.save(path)

    def forge(config):
        _set(config, "fitted.extra.image_shape", [1, 46000, 46000])
        _set(config, "fitted.n_features_in_", 46000 * 46000)

    _refused(_edit_config(path, forge), r"image_shape\[1\].*between 1 and 4096")
