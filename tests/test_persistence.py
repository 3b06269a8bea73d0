import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import gananomaly
from gananomaly import GANAnomalyDetector
from gananomaly.persistence import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME


def test_save_load_scores_identically(tmp_path, blobs, fitted_blobs):
    _, X_test, _ = blobs
    path = tmp_path / "model"
    fitted_blobs.save(path)
    assert sorted(os.listdir(path)) == [CONFIG_NAME, WEIGHTS_NAME]
    loaded = gananomaly.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.score_samples(X_test), fitted_blobs.score_samples(X_test))
    np.testing.assert_array_equal(loaded.predict(X_test), fitted_blobs.predict(X_test))
    assert loaded.get_params() == {**fitted_blobs.get_params(), "callbacks": None}
    assert loaded.history_ == fitted_blobs.history_
    config = json.loads((path / CONFIG_NAME).read_text())
    assert config["library_version"] == gananomaly.__version__ and config["format_version"] == FORMAT_VERSION == 6


def test_save_overwrites_atomically_and_leaves_no_temp(tmp_path, blobs, fitted_blobs):
    path = tmp_path / "model"
    fitted_blobs.save(path)
    other = GANAnomalyDetector(epochs=2, random_state=1).fit(blobs[0])
    other.save(path)
    assert os.listdir(tmp_path) == ["model"]
    np.testing.assert_array_equal(gananomaly.load(path).score_samples(blobs[1]), other.score_samples(blobs[1]))


def test_pipeline_save_load(tmp_path, blobs):
    X_train, X_test, _ = blobs
    pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(epochs=3, random_state=0)).fit(X_train)
    gananomaly.persistence.save(pipe, tmp_path / "pipe")
    loaded = gananomaly.load(tmp_path / "pipe")
    np.testing.assert_array_equal(loaded.score_samples(X_test), pipe.score_samples(X_test))


def test_unfitted_and_wrong_objects_are_refused(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GANAnomalyDetector().save(tmp_path / "m")
    with pytest.raises(TypeError, match="GANAnomalyDetector"):
        gananomaly.persistence.save(StandardScaler().fit([[1.0], [2.0]]), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_unwritable_or_missing_parent(tmp_path, fitted_blobs):
    with pytest.raises(ValueError, match="not an existing directory"):
        fitted_blobs.save(tmp_path / "nope" / "model")
    # a parent that is a file (root ignores permission bits, so this is the unwritable case)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not an existing directory"):
        fitted_blobs.save(blocker / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_models_and_outputs_get_the_permissions_of_the_umask(tmp_path, blobs, fitted_blobs):
    """Temporary files are created private (0600 / 0700); a model or an output moved into
    place from one was readable by its owner only (a model server under another account could
    not load it). Now: what the umask gives, and an output replaced keeps its own mode."""
    import pandas as pd
    from gananomaly.pipelines.batch_score import score_file

    from gananomaly._atomic import atomic_open

    def mode(p):
        return os.stat(p).st_mode & 0o777

    before = os.umask(0o027)
    try:
        fitted_blobs.save(tmp_path / "m")
        assert mode(tmp_path / "m") == 0o750 and mode(tmp_path / "m" / CONFIG_NAME) == 0o640
        with atomic_open(tmp_path / "new.json") as fh:
            fh.write("{}")
        assert mode(tmp_path / "new.json") == 0o640
        (tmp_path / "shared.json").write_text("old")
        os.chmod(tmp_path / "shared.json", 0o664)
        with atomic_open(tmp_path / "shared.json") as fh:
            fh.write("new")
        assert mode(tmp_path / "shared.json") == 0o664 and (tmp_path / "shared.json").read_text() == "new"
        pd.DataFrame(blobs[1]).rename(columns=str).to_csv(tmp_path / "in.csv", index=False)
        score_file(str(tmp_path / "m"), tmp_path / "in.csv", tmp_path / "out.parquet", chunk_rows=50)
        assert mode(tmp_path / "out.parquet") == 0o640
    finally:
        os.umask(before)


def test_a_pipeline_a_load_would_refuse_is_not_saved(tmp_path):
    """Dates kept as one-hot categories hold pandas Timestamps, which a load refuses (not on
    the allow-list): the save succeeded and the model could never be loaded again. Now the
    save is refused, naming the type, and nothing is written; the table pipeline refuses date
    columns at the start, naming them."""
    import pandas as pd
    from gananomaly.pipelines.tabular import TabularConfig, build_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.RandomState(0)
    when = pd.DataFrame({"when": pd.Series(pd.date_range("2024-01-01", periods=60)).astype(object)})
    pipe = make_pipeline(OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                         GANAnomalyDetector(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0))
    pipe.fit(when)
    with pytest.raises(ValueError, match=r"cannot save .*types a load refuses: \['pandas\.Timestamp'\].*nothing was"):
        gananomaly.persistence.save(pipe, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    df = pd.DataFrame({"amount": rng.randn(60), "when": pd.date_range("2024-01-01", periods=60)})
    with pytest.raises(ValueError, match=r"column\(s\) \['when'\] hold dates or durations.*data\.drop_columns"):
        build_pipeline(TabularConfig(detector={"epochs": 1}), df)
    as_objects = df.assign(when=df["when"].dt.date)  # Parquet's date32 reads as Python dates
    with pytest.raises(ValueError, match=r"column\(s\) \['when'\] hold dates or durations"):
        build_pipeline(TabularConfig(detector={"epochs": 1}), as_objects)
    as_text = df.assign(when=df["when"].dt.strftime("%Y-%m-%d %H:%M"))  # as a CSV holds them
    with pytest.raises(ValueError, match=r"column\(s\) \['when'\] hold dates or durations"):
        build_pipeline(TabularConfig(detector={"epochs": 1}), as_text)
    few = df.assign(when=np.where(np.arange(60) % 2, "2024-01-01", "2024-02-01"))  # two values: categories
    assert build_pipeline(TabularConfig(detector={"epochs": 1}), few) is not None


def test_a_detector_with_adam_betas_saves_and_loads(tmp_path, blobs):
    """betas (the README's option for a wider tabular generator) made every save fail after the
    fit ("params.betas must not be a list"). Saved as a list, restored as the tuple; a tampered
    value is refused naming it."""
    det = GANAnomalyDetector(epochs=2, validation_fraction=0, random_state=0, betas=(0.0, 0.9),
                             generator_learning_rate=1e-4).fit(blobs[0])
    det.save(tmp_path / "m")
    back = gananomaly.load(tmp_path / "m")
    assert back.betas == (0.0, 0.9) and back.get_params() == {**det.get_params(), "callbacks": None}
    np.testing.assert_array_equal(back.score_samples(blobs[1]), det.score_samples(blobs[1]))
    from gananomaly.model_format import with_record_digest

    for bad, match in (([0.5, 1.5], r"params\.betas\[1\]' must be in \[0, 1\)"), ([0.5], "params.betas")):
        shutil.copytree(tmp_path / "m", tmp_path / "t")
        config = json.loads((tmp_path / "t" / CONFIG_NAME).read_text())
        config["params"]["betas"] = bad
        (tmp_path / "t" / CONFIG_NAME).write_text(json.dumps(with_record_digest(config)))
        with pytest.raises(ValueError, match=match):
            gananomaly.load(tmp_path / "t")
        shutil.rmtree(tmp_path / "t")


def test_batch_scoring_to_an_unwritable_output_leaves_nothing(tmp_path, blobs, fitted_blobs):
    import pandas as pd
    from gananomaly.pipelines.batch_score import score_file

    fitted_blobs.save(tmp_path / "m")
    pd.DataFrame(blobs[1]).rename(columns=str).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(ValueError, match="--output: directory .* does not exist"):
        score_file(str(tmp_path / "m"), tmp_path / "in.csv", tmp_path / "blocker" / "out.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "in.csv", "m"]


def _copy(src, dst, edit=None):
    """A copy of the saved model ``src`` at ``dst``, its config changed by ``edit(config)``
    (and its record digest forged to match: the checks behind the digest are under test)."""
    from gananomaly.model_format import with_record_digest

    shutil.copytree(src, dst)
    if edit is not None:
        config = json.loads((dst / CONFIG_NAME).read_text())
        edit(config)
        (dst / CONFIG_NAME).write_text(json.dumps(with_record_digest(config)))
    return dst


def test_load_errors(tmp_path, fitted_blobs):
    with pytest.raises(FileNotFoundError, match="no gananomaly model"):
        gananomaly.load(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a valid gananomaly model"):
        gananomaly.load(tmp_path / "empty")
    saved = tmp_path / "model"
    fitted_blobs.save(saved)
    # truncated weights
    path = _copy(saved, tmp_path / "truncated")
    data = (path / WEIGHTS_NAME).read_bytes()
    (path / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt model.safetensors"):
        gananomaly.load(path)
    # corrupt config
    path = _copy(saved, tmp_path / "corrupt")
    (path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt config.json"):
        gananomaly.load(path)
    # newer format
    with pytest.raises(ValueError, match="newer"):
        gananomaly.load(_copy(saved, tmp_path / "newer", lambda c: c.update(format_version=99)))
    # an older format (no knn statistics): refused with a message that says to refit
    with pytest.raises(ValueError, match="older gananomaly.*refit"):
        gananomaly.load(_copy(saved, tmp_path / "older", lambda c: c.update(format_version=2)))
    # config tampered with an invalid parameter
    with pytest.raises(ValueError, match="objective"):
        gananomaly.load(_copy(saved, tmp_path / "evil", lambda c: c["params"].update(objective="evil")))


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, fitted_blobs):
    path = tmp_path / "model"
    fitted_blobs.save(path)
    marker = tmp_path / "pwned"
    boom = _Boom()
    boom.marker = marker
    (path / WEIGHTS_NAME).write_bytes(pickle.dumps({"generator.out.weight": boom}))
    with pytest.raises(ValueError, match="not a valid gananomaly model"):
        gananomaly.load(path)
    assert not marker.exists()


def test_estimator_pickle_roundtrip_in_fresh_process(tmp_path, blobs, fitted_blobs):
    _, X_test, _ = blobs
    blob = tmp_path / "est.pkl"
    blob.write_bytes(pickle.dumps(fitted_blobs))
    np.save(tmp_path / "X.npy", X_test)
    code = (
        "import pickle, numpy as np, sys;"
        f"m = pickle.loads(open({str(blob)!r}, 'rb').read());"
        f"np.save({str(tmp_path / 'out.npy')!r}, m.score_samples(np.load({str(tmp_path / 'X.npy')!r})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), fitted_blobs.score_samples(X_test))


def test_a_pipeline_refuses_a_detector_of_another_save(tmp_path, blobs):
    """pipeline.json did not name its detector: detector/ copied from another pipeline (or one
    of another width) loaded, and scored other numbers or failed inside scikit-learn. Since
    format 5 the pipeline records its detector's record digest."""
    import pandas as pd
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = pd.DataFrame(blobs[0][:, :3], columns=["a", "b", "c"])
    for seed in (0, 1):
        pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(epochs=1, encoder_epochs=1, validation_fraction=0,
                                                                  random_state=seed))
        gananomaly.persistence.save(pipe.fit(X), tmp_path / f"p{seed}")
    shutil.copytree(tmp_path / "p0", tmp_path / "mixed")
    shutil.rmtree(tmp_path / "mixed" / "detector")
    shutil.copytree(tmp_path / "p1" / "detector", tmp_path / "mixed" / "detector")
    with pytest.raises(ValueError, match=r"pipeline\.json key 'detector_sha256' does not match the record"):
        gananomaly.load(tmp_path / "mixed")
    np.testing.assert_array_equal(gananomaly.load(tmp_path / "p1").score_samples(X), pipe.score_samples(X))
