"""gananomaly.pipelines.image: folders and arrays in, model + per-file CSV + AUROC per defect kind out."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gananomaly.pipelines.cli import main
from gananomaly.pipelines.image import (
    GRID_GAP,
    auroc_per_kind,
    fit_images,
    load_image_source,
    overlay_pixels,
    score_images,
)
from PIL import Image

import gananomaly

PARAMS = {"epochs": 30, "encoder_epochs": 30, "random_state": 0}
#: The columns `gananomaly score` writes for images (asserted against the table job below).
IMAGE_TABLE = ["file", "discriminator", "reconstruction", "latent", "knn", "combined", "score", "label"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_images.py
    yield
    torch.set_num_threads(before)


def _normal(rng, size=16):
    """A smooth diagonal gradient with a little noise: every normal image looks alike."""
    yy, xx = np.mgrid[0:size, 0:size]
    img = 100 + 5 * (yy + xx) + rng.normal(0, 3, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _spot(rng, size=16):
    img = _normal(rng, size).copy()
    y, x = rng.randint(2, size - 6, 2)
    img[y : y + 5, x : x + 5] = 255
    return img


def _save(arr, path, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode if arr.ndim == 2 else "RGB").save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(0)
    for i in range(60):
        _save(_normal(rng), root / "train" / f"n{i:03d}.png")
    for i in range(15):
        _save(_normal(rng), root / "test" / "normal" / f"n{i:03d}.png")
        _save(_spot(rng), root / "test" / "spot" / f"s{i:03d}.png")
    for i in range(10):
        inverted = 255 - _normal(rng)
        _save(inverted, root / "test" / "inverted" / f"v{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def fitted(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = fit_images(folder, out / "model", scores_csv=out / "scores.csv", params=PARAMS, mlflow=False)
    return result, out


def test_folder_fit_evaluates_per_kind_and_writes_outputs(folder, fitted):
    result, out = fitted
    det = result["model"]
    assert det.image_shape_ == (1, 16, 16) and det.arch_["kind"] == "conv"
    assert result["run_id"] is None and result["skipped"] == []
    assert set(result["auroc"]) == {"spot", "inverted", "all"}
    assert result["auroc"]["spot"] >= 0.9 and result["auroc"]["inverted"] >= 0.9, result["auroc"]
    csv = pd.read_csv(out / "scores.csv")
    assert len(csv) == 40
    assert list(csv.columns) == IMAGE_TABLE == list(result["scores"].columns)
    assert csv["file"].iloc[0] == "test/inverted/v000.png"
    # no temporary files left behind next to the outputs
    assert sorted(p.name for p in out.iterdir()) == ["model", "scores.csv"]
    # the columns are the estimator's own outputs: score = score_samples, label = predict
    images = load_image_source(folder, split="test").images
    loaded = gananomaly.load(out / "model")
    np.testing.assert_allclose(loaded.score_components(images)["combined"], csv["combined"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(csv["score"], det.score_samples(images), rtol=0, atol=1e-9)
    assert csv["label"].dtype == np.int64 and set(csv["label"]) <= {1, -1}
    np.testing.assert_array_equal(csv["label"], det.predict(images))
    assert (csv["label"] == -1).any() and (csv["label"] == 1).any()  # the threshold separates something here


def test_image_tables_have_one_schema_and_one_pass(folder, fitted, tmp_path, monkeypatch):
    """`image fit --scores`, `image score --out` and the table job `gananomaly score` write the
    same columns in the same order, with the same values; scoring runs the networks once per image."""
    result, out = fitted
    assert main(["score", "--model", str(out / "model"), "--input", str(folder / "test"),
                 "--output", str(tmp_path / "job.csv")]) == 0
    job = pd.read_csv(tmp_path / "job.csv")
    # count the rows through the encoder of the model score_images loads
    encoded, loaded = [], []
    load = gananomaly.load

    def counting_load(path, **kwargs):
        loaded.append(load(path, **kwargs))
        loaded[0].encoder_.register_forward_hook(lambda module, args, output: encoded.append(len(output)))
        return loaded[0]

    monkeypatch.setattr(gananomaly, "load", counting_load)
    frame = score_images(out / "model", folder, tmp_path / "s.parquet")
    table_pass = sum(encoded)
    encoded.clear()
    loaded[0].score_samples(load_image_source(folder, split="test").images)
    assert table_pass == sum(encoded) > 0  # the networks see each image once, as one score_samples call
    fit_csv = pd.read_csv(out / "scores.csv")
    written = pd.read_parquet(tmp_path / "s.parquet")
    assert list(job.columns) == list(frame.columns) == list(written.columns) == list(fit_csv.columns) == IMAGE_TABLE
    pd.testing.assert_frame_equal(written.astype({"file": object}), frame)
    # same rows as the table job (its file names are relative to the folder it was given)
    assert list(frame["file"]) == ["test/" + f for f in job["file"]]
    pd.testing.assert_frame_equal(frame.drop(columns="file"), job.drop(columns="file"), check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(fit_csv.drop(columns="file"), job.drop(columns="file"), check_exact=False,
                                  rtol=1e-9)
    with pytest.raises(ValueError, match="cannot tell the format"):
        score_images(out / "model", folder, tmp_path / "s.txt")
    with pytest.raises(ValueError, match="does not exist"):
        score_images(out / "model", folder, tmp_path / "missing" / "s.csv")
    # given the data set folder itself, the table job names its test/ images as `image score` does
    assert main(["score", "--model", str(out / "model"), "--input", str(folder), "--output",
                 str(tmp_path / "whole.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "whole.csv")["file"]) == list(frame["file"])
    # the rules of `gananomaly score --output`: a compressed CSV is compressed, a directory or a
    # compression that cannot be written is refused before any scoring
    score_images(out / "model", folder, tmp_path / "s.csv.gz")
    assert (tmp_path / "s.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv.gz"), pd.read_csv(tmp_path / "whole.csv"),
                                  check_exact=False, rtol=1e-9)
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        score_images(out / "model", folder, tmp_path / "d.csv")
    with pytest.raises(ValueError, match="not .zip"):
        score_images(out / "model", folder, tmp_path / "s.csv.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "job.csv", "s.csv.gz", "s.parquet", "whole.csv"]


def test_score_folder_and_arrays_with_saved_model(folder, fitted, tmp_path):
    result, out = fitted
    frame = score_images(out / "model", folder, tmp_path / "s.csv")
    np.testing.assert_allclose(frame["combined"], result["scores"]["combined"], rtol=0, atol=1e-12)
    kinds = load_image_source(folder, split="test").kinds
    assert auroc_per_kind(kinds, frame["combined"].to_numpy()) == result["auroc"]
    # a plain folder (no test/ subfolder) is scored whole, RGB files are converted to grey,
    # other sizes resized to the model's 16x16
    plain = tmp_path / "plain"
    rng = np.random.RandomState(3)
    _save(np.stack([_normal(rng, 32)] * 3, axis=-1), plain / "rgb_big.png")
    _save(_normal(rng), plain / "grey.png")
    frame = score_images(out / "model", plain)
    assert list(frame["file"]) == ["grey.png", "rgb_big.png"] and np.isfinite(frame["combined"]).all()
    # arrays must match the model's channels
    np.save(tmp_path / "rgb.npy", np.zeros((3, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"3 channel\(s\) \(RGB\) but this detector was fitted on images with 1"):
        score_images(out / "model", tmp_path / "rgb.npy")
    np.save(tmp_path / "grey.npy", np.zeros((3, 16, 16)))
    assert len(score_images(out / "model", tmp_path / "grey.npy")) == 3


def test_corrupt_files_reported_by_name(tmp_path, caplog):
    rng = np.random.RandomState(1)
    for i in range(12):
        _save(_normal(rng), tmp_path / "data" / "train" / f"n{i}.png")
    (tmp_path / "data" / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with caplog.at_level(logging.WARNING, logger="gananomaly.pipelines.image"):
        data = load_image_source(tmp_path / "data", split="train", on_error="skip")
    assert len(data.images) == 12 and data.skipped[0][0] == "train/broken.png"
    assert "train/broken.png" in caplog.text
    with pytest.raises(ValueError, match=r"1 image file\(s\) could not be read: train/broken.png"):
        load_image_source(tmp_path / "data", split="train", on_error="raise")


def test_mixed_sizes_are_resized_with_a_warning(tmp_path, caplog):
    rng = np.random.RandomState(2)
    _save(_normal(rng, 16), tmp_path / "a.png")
    _save(_normal(rng, 24), tmp_path / "b.png")
    _save(np.stack([_normal(rng, 16)] * 3, axis=-1), tmp_path / "c.png")
    with caplog.at_level(logging.WARNING, logger="gananomaly.pipelines.image"):
        data = load_image_source(tmp_path, split="train")
    assert data.images.shape == (3, 1, 16, 16)
    assert "1 image(s) had another size than 16x16" in caplog.text
    rgb = load_image_source(tmp_path, split="train", mode="rgb", size=(8, 12))
    assert rgb.images.shape == (3, 3, 8, 12)
    with pytest.raises(ValueError, match="mode must be 'grey' or 'rgb'"):
        load_image_source(tmp_path, split="train", mode="cmyk")


def test_npz_source_with_kinds(tmp_path):
    rng = np.random.RandomState(4)
    train = np.stack([_normal(rng) for _ in range(40)]).astype(float)
    test = np.stack([_normal(rng) for _ in range(10)] + [255 - _normal(rng) for _ in range(10)]).astype(float)
    np.savez(tmp_path / "d.npz", train=train[..., None], test=test[..., None],
             test_kinds=np.array(["normal"] * 10 + ["inverted"] * 10))
    result = fit_images(tmp_path / "d.npz", tmp_path / "m", scores_csv=tmp_path / "s.csv", params=PARAMS,
                        mlflow=False)
    assert result["model"].image_shape_ == (1, 16, 16)
    assert result["auroc"]["inverted"] >= 0.9
    assert pd.read_csv(tmp_path / "s.csv")["file"].iloc[-1] == "d.npz:test[19]"
    with pytest.raises(ValueError, match="has no 'train' array"):
        np.savez(tmp_path / "bad.npz", test=test)
        fit_images(tmp_path / "bad.npz", tmp_path / "m2", mlflow=False)


def test_cli_fit_and_score(folder, tmp_path, capsys):
    rc = main(["image", "fit", str(folder), "--model-dir", str(tmp_path / "m"), "--scores", str(tmp_path / "f.csv"),
               "--epochs", "5", "--param", "encoder_epochs=5", "--no-mlflow"])
    out = capsys.readouterr().out
    assert rc == 0 and "AUROC spot:" in out and (tmp_path / "f.csv").is_file()
    rc = main(["image", "score", str(tmp_path / "m"), str(folder), "--out", str(tmp_path / "s.csv")])
    out = capsys.readouterr().out
    flagged = int((pd.read_csv(tmp_path / "s.csv")["label"] == -1).sum())
    assert rc == 0 and f"scored 40 images; {flagged} flagged as outliers" in out and "AUROC spot:" in out
    pd.testing.assert_series_equal(pd.read_csv(tmp_path / "s.csv")["combined"],
                                   pd.read_csv(tmp_path / "f.csv")["combined"])
    rc = main(["image", "score", str(tmp_path / "m"), str(tmp_path / "missing")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["image", "fit", str(folder), "--model-dir", str(tmp_path / "m"), "--param", "nonsense"])
    assert rc == 2 and "KEY=VALUE" in capsys.readouterr().err
    # one setting given two ways: which one won was not said
    rc = main(["image", "fit", str(folder), "--model-dir", str(tmp_path / "m2"), "--epochs", "1",
               "--param", "epochs=5"])
    assert rc == 2 and "--epochs and --param epochs=... both set the epochs" in capsys.readouterr().err
    rc = main(["image", "fit", str(folder), "--model-dir", str(tmp_path / "m2"), "--param", "latent_dim=8",
               "--param", "latent_dim=16"])
    assert rc == 2 and "--param latent_dim is given twice" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()


@pytest.mark.slow  # about a minute, nearly all of it MLflow's store setup and logging
def test_mlflow_run_logs_per_kind_auroc(folder, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = fit_images(folder, tmp_path / "m", params={"epochs": 3, "encoder_epochs": 3, "random_state": 0},
                        mlflow=True, experiment="images-test", tracking_uri=uri, log_model=False)
    assert result["run_id"] is not None
    client = MlflowClient(uri)
    metrics = client.get_run(result["run_id"]).data.metrics
    assert metrics["auroc_kind_spot"] == pytest.approx(result["auroc"]["spot"])
    assert "auroc_combined" in metrics
    # the grid of the 16 most anomalous test images' overlays, and its index
    local = Path(client.download_artifacts(result["run_id"], "anomaly_maps", str(tmp_path / "art")))
    assert sorted(p.name for p in local.iterdir()) == ["top_anomalies.json", "top_anomalies.png"]
    index = json.loads((local / "top_anomalies.json").read_text())
    scores = result["scores"].sort_values("score", kind="stable")
    assert [t["file"] for t in index["tiles"]] == list(scores["file"][:16])
    assert [t["score"] for t in index["tiles"]] == pytest.approx(list(scores["score"][:16]))
    assert index["tile_shape"] == [64, 64]  # 16x16 images enlarged 4 times
    with Image.open(local / "top_anomalies.png") as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == (4 * 64 + 3 * GRID_GAP, 4 * 64 + 3 * GRID_GAP)  # 4 x 4 tiles
        grid = np.asarray(png)
    # each tile is the overlay of the file the index names, in reading order
    det, test = result["model"], load_image_source(folder, split="test")
    for tile in index["tiles"]:
        image = test.images[test.names.index(tile["file"])][None]
        want = np.round(255 * overlay_pixels(image, det.anomaly_map(image))[0]).astype(np.uint8)
        y, x = tile["row"] * (64 + GRID_GAP), tile["col"] * (64 + GRID_GAP)
        np.testing.assert_array_equal(grid[y : y + 64 : 4, x : x + 64 : 4], want)
    assert [(t["row"], t["col"]) for t in index["tiles"]] == [divmod(i, 4) for i in range(16)]


def test_one_scoring_command_scores_a_folder_of_images_like_a_table(folder, fitted, tmp_path):
    """`gananomaly score --input FOLDER` scores images with the table schema (file, the
    components, score higher = more normal, label +1/-1), in chunks of files, atomically;
    a chunked run equals a one-chunk run and `score_samples`/`predict` on the same images."""
    from gananomaly.pipelines.batch_score import score_file
    from gananomaly.pipelines.image import list_images, load_image_files

    _, out = fitted
    model_dir = out / "model"
    test_dir = folder / "test"
    out_csv = tmp_path / "scores.csv"
    assert main(["score", "--model", str(model_dir), "--input", str(test_dir), "--output", str(out_csv)]) == 0
    got = pd.read_csv(out_csv)
    assert list(got.columns) == ["file", "discriminator", "reconstruction", "latent", "knn", "combined", "score",
                                 "label"]
    assert len(got) == 40 and got["file"].iloc[0] == "inverted/v000.png"
    det = gananomaly.load(model_dir)
    data = load_image_files(list_images(test_dir), mode="grey", size=(16, 16), root=test_dir)
    np.testing.assert_allclose(got["score"], det.score_samples(data.images), rtol=1e-12)
    np.testing.assert_array_equal(got["label"], det.predict(data.images))
    stats = score_file(model_dir, test_dir, tmp_path / "chunked.parquet", chunk_rows=7)
    assert stats["chunks"] == 6 and stats["rows_scored"] == 40
    chunked = pd.read_parquet(tmp_path / "chunked.parquet")
    pd.testing.assert_frame_equal(chunked, got, check_exact=False, rtol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunked.parquet", "scores.csv"]  # no parts left
    # a table model refuses a folder with a message that says what to pass
    from gananomaly import GANAnomalyDetector

    table = GANAnomalyDetector(epochs=1, random_state=0).fit(np.random.RandomState(0).randn(50, 3))
    with pytest.raises(ValueError, match="fitted on a table"):
        score_file(table, test_dir, tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        score_file(model_dir, tmp_path / "missing", tmp_path / "x.csv")
    # table options that mean nothing for images are refused, not ignored
    with pytest.raises(ValueError, match=r"--id-column 'order_id' is for tables"):
        score_file(model_dir, test_dir, tmp_path / "x.csv", id_column="order_id")
    with pytest.raises(ValueError, match=r"explain \(--explain\) is for tables"):
        score_file(model_dir, test_dir, tmp_path / "x.csv", explain=2)
    with pytest.raises(ValueError, match=r"--extra-columns error is for tables"):
        score_file(model_dir, test_dir, tmp_path / "x.csv", extra_columns="error")
    with pytest.raises(ValueError, match=r"--unseen error is for tables"):
        score_file(model_dir, test_dir, tmp_path / "x.csv", unseen="error")
    assert not (tmp_path / "x.csv").exists()


def test_image_score_writes_heat_map_overlays(folder, fitted, tmp_path):
    """`gananomaly image score --maps DIR`: one overlay PNG per image at its size, and on the
    images with a planted spot the overlay is redder on the spot than around it."""
    _, out = fitted
    maps = tmp_path / "maps"
    assert main(["image", "score", str(out / "model"), str(folder), "--out", str(tmp_path / "s.csv"),
                 "--maps", str(maps)]) == 0
    pngs = sorted(maps.rglob("*.png"))
    assert len(pngs) == 40 and not list(maps.rglob("*.tmp"))
    inside, outside = [], []
    for p in pngs:
        img = np.asarray(Image.open(p), dtype=float)
        assert img.shape == (16, 16, 3)
        if p.parent.name == "spot":
            spot = np.asarray(Image.open(folder / "test" / "spot" / p.stem)) == 255  # the planted 5x5 block
            red = img[..., 0] - img[..., 1]
            inside.append(red[spot].mean())
            outside.append(red[~spot].mean())
    assert len(inside) == 15
    print("spot redder inside:", np.mean(np.array(inside) > np.array(outside)), np.mean(inside), np.mean(outside))
    assert np.mean(np.array(inside) > np.array(outside)) >= 0.8, (inside, outside)


def test_folder_scoring_decodes_a_bounded_number_of_images_at_a_time(folder, fitted, tmp_path, monkeypatch):
    """A folder is streamed: no call decodes more images than fit in the job's byte budget
    (here lowered to 10 images' worth), whatever --chunk-rows asks, and every file is
    scored once. Memory is bounded by the chunk, not by the folder."""
    import gananomaly.pipelines.batch_score as bs
    import gananomaly.pipelines.image_files as image_files

    _, out = fitted
    seen = []
    real = image_files.load_image_files

    def spy(files, *args, **kwargs):
        seen.append(len(files))
        return real(files, *args, **kwargs)

    monkeypatch.setattr(image_files, "load_image_files", spy)
    monkeypatch.setattr(bs, "IMAGE_CHUNK_BYTES", 10 * 8 * 16 * 16)  # ten 16x16 grey images as float64
    stats = bs.score_file(out / "model", folder / "test", tmp_path / "s.parquet", chunk_rows=50_000)
    assert max(seen) == 10 and sum(seen) == 40 and stats["rows_scored"] == 40
    assert pd.read_parquet(tmp_path / "s.parquet")["file"].is_unique


def test_a_chunk_of_unreadable_files_only_is_skipped_like_any_unreadable_file(folder, fitted, tmp_path, caplog):
    import logging

    from gananomaly.pipelines.batch_score import score_file

    _, out = fitted
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "c.png"):
        (src / name).write_bytes((folder / "test" / "normal" / "n000.png").read_bytes())
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # alone in chunk 2 of 3
    with caplog.at_level(logging.WARNING):
        stats = score_file(out / "model", src, tmp_path / "s.parquet", chunk_rows=1)
    assert [r.getMessage().count("b.png") for r in caplog.records if "b.png" in r.getMessage()] == [1]  # once
    assert (stats["rows_read"], stats["rows_scored"], stats["n_skipped"]) == (3, 2, 1)
    assert stats["skipped_rows"] == ["b.png"]  # named (the command printed "skipped 1 row(s): " and no name)
    assert pd.read_parquet(tmp_path / "s.parquet")["file"].tolist() == ["a.png", "c.png"]


def test_16_bit_grey_images_are_scaled_to_0_255_not_clipped(tmp_path):
    from gananomaly.pipelines.image import load_image_files

    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, value in zip(paths, (1000, 60000)):
        Image.fromarray(np.full((4, 4), value, np.uint16)).save(path)
    assert Image.open(paths[0]).mode.startswith("I")
    grey = load_image_files(paths, mode="grey")
    np.testing.assert_allclose(grey.images[:, 0, 0, 0], [1000 * 255 / 65535, 60000 * 255 / 65535], rtol=1e-6)
    rgb = load_image_files(paths, mode="rgb", size=2)
    assert rgb.images.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(rgb.images[1], 60000 * 255 / 65535, rtol=1e-6)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif \(ValueError: floating-point pixels \(mode F\)"):
        load_image_files([tmp_path / "f.tif"], on_error="raise", root=tmp_path)


def test_image_sources_users_get_wrong_are_named_or_refused(folder, fitted, tmp_path, caplog):
    """An upper-case .NPZ scored its train array; a model's 0-255 inputs given as 0-1 (or the
    reverse) all scored as outliers, silently; --on-bad-rows error was ignored for a folder; a
    failed image job left <output>.parts behind; --maps onto a file failed after the scoring
    pass; an .npz without a test array gave no reason; MVTec's test/good was not normal."""
    from gananomaly.pipelines.batch_score import score_file

    _, out = fitted
    model = out / "model"
    data = load_image_source(folder, split="test")
    with open(tmp_path / "both.NPZ", "wb") as fh:  # (np.savez would append .npz to the name)
        np.savez(fh, train=np.zeros((7, 16, 16)), test=data.images[:5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(score_images(model, tmp_path / "both.NPZ")) == 5  # the test array, as for .npz
    assert not [w for w in caught if "pixel range" in str(w.message)]  # its own kind of images: no warning
    with pytest.warns(UserWarning, match=r"far outside the training images' pixel range .*0-255 against 0-1"):
        score_images(model, _npy(tmp_path / "unit.npy", data.images[:5] / 255))
    np.savez(tmp_path / "plain.npz", data.images[:3])
    with pytest.raises(ValueError, match=r"no images to score in .*plain\.npz.*no 'test' array \(found \['arr_0'\]\)"):
        score_images(model, tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=r"--maps .* is a file, not a folder"):
        score_images(model, folder, maps_dir=tmp_path / "plain.npz")
    messy = tmp_path / "messy"
    messy.mkdir()
    (messy / "a.png").write_bytes((folder / "train" / "n000.png").read_bytes())
    (messy / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match=r"could not be read: b\.png"):
        score_file(model, messy, tmp_path / "s.csv", on_bad_rows="error")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both.NPZ", "messy", "plain.npz", "unit.npy"]
    # an image holding NaN is named, and skipped under --on-bad-rows skip (it stopped the job, unnamed)
    holed = data.images[:5].copy()
    holed[3, 0, 2, 2] = np.nan
    _npy(tmp_path / "holed.npy", holed)
    with pytest.raises(ValueError, match=r"1 image\(s\) hold NaN or infinity: \['.*\[3\]'\]"):
        score_file(model, tmp_path / "holed.npy", tmp_path / "h.csv", on_bad_rows="error")
    with pytest.raises(ValueError, match=r"NaN or infinity: 1 image\(s\), at positions 3 "):
        gananomaly.load(model).score_samples(holed)
    stats = score_file(model, tmp_path / "holed.npy", tmp_path / "h.csv", on_bad_rows="skip")
    kept = pd.read_csv(tmp_path / "h.csv")
    assert stats["rows_scored"] == 4 and len(kept) == 4 and not kept["file"].str.endswith("[3]").any()
    np.testing.assert_allclose(kept["score"], gananomaly.load(model).score_samples(holed[[0, 1, 2, 4]]), rtol=1e-12)
    assert score_file(model, messy, tmp_path / "s.csv")["skipped_rows"] == ["b.png"]  # default for images: skip
    mvtec = tmp_path / "mvtec"
    for kind, src in (("good", "normal"), ("spot", "spot")):
        (mvtec / "test" / kind).mkdir(parents=True)
        for f in sorted((folder / "test" / src).iterdir())[:3]:
            (mvtec / "test" / kind / f.name).write_bytes(f.read_bytes())
    assert set(load_image_source(mvtec, split="test").kinds) == {"normal", "spot"}


def _npy(path, array):
    np.save(path, array)
    return path


def test_image_score_takes_an_mlflow_model_as_gananomaly_score_does(fitted, folder, tmp_path):
    """`gananomaly image score` loaded model directories only; `gananomaly score` also took
    MLflow models (a local MLflow model directory here; runs:/ and models:/ URIs the same way)."""
    pytest.importorskip("mlflow")
    import gananomaly
    import gananomaly.mlflow as gm

    result, out = fitted
    gm.save_model(gananomaly.load(out / "model"), tmp_path / "mlflow_model")
    frame = score_images(tmp_path / "mlflow_model", folder)
    np.testing.assert_allclose(frame["combined"], result["scores"]["combined"], rtol=0, atol=1e-12)
