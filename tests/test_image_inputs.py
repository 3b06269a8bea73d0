"""Image sources a user really has: a file Pillow refuses as too large, linked folders, phone
photos with an EXIF rotation, upper-case suffixes, arrays saved from pandas, a test/ folder
without train/, splits of different sizes, file names that are not UTF-8; and a model folder
that cannot be written is found before the training."""

from __future__ import annotations

import os

import numpy as np
import pytest
from gananomaly.pipelines.image_files import list_images, load_image_files, load_image_source
from PIL import Image

from gananomaly import GANAnomalyDetector


def _png(path, side=8, seed=0):
    rng = np.random.RandomState(seed)
    Image.fromarray((rng.rand(side, side) * 255).astype(np.uint8)).save(path)


def test_a_file_pillow_refuses_as_too_large_is_skipped_and_named(tmp_path, monkeypatch):
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    _png(tmp_path / "big.png", side=16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16x16 is then a "decompression bomb"
    data = load_image_files(sorted(tmp_path.glob("*.png")), root=tmp_path)
    assert data.names == ["0.png", "1.png", "2.png"]
    assert data.skipped[0][0] == "big.png" and "DecompressionBombError" in data.skipped[0][1]


def test_linked_folders_are_read_once_and_exif_rotation_is_applied(tmp_path):
    (tmp_path / "real").mkdir()
    for i in range(2):
        _png(tmp_path / "real" / f"{i}.png", seed=i)
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "data" / "linked")
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop")  # a link back up: read once
    names = [str(p.relative_to(tmp_path / "data")) for p in list_images(tmp_path / "data")]
    assert names == ["linked/0.png", "linked/1.png"]
    photo = Image.new("L", (16, 8))  # stored 16 wide, 8 high; EXIF says: turn it a quarter
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "photo.jpg", exif=exif)
    assert load_image_files([tmp_path / "photo.jpg"]).images.shape == (1, 1, 16, 8)  # as a viewer shows it


def test_arrays_with_upper_case_suffix_and_object_labels(tmp_path):
    with open(tmp_path / "X.NPY", "wb") as fh:
        np.save(fh, np.zeros((4, 8, 8)))
    assert load_image_source(tmp_path / "X.NPY").images.shape == (4, 1, 8, 8)
    np.savez(tmp_path / "s.npz", train=np.zeros((4, 8, 8)), test=np.zeros((2, 8, 8)),
             test_kinds=np.array(["normal", "spot"], dtype=object))  # as pandas gives them
    with pytest.raises(ValueError, match=r"'s\.npz:test_kinds' holds Python objects.*astype\(str\)"):
        load_image_source(tmp_path / "s.npz", split="test")


def test_fit_images_checks_its_inputs_and_model_folder_before_training(tmp_path, monkeypatch):
    from gananomaly.pipelines.image import fit_images

    fits = []
    monkeypatch.setattr(GANAnomalyDetector, "fit", lambda self, *a, **k: fits.append(1) or self)
    (tmp_path / "only" / "test").mkdir(parents=True)
    _png(tmp_path / "only" / "test" / "a.png")
    with pytest.raises(ValueError, match="test/ folder but no train/"):
        fit_images(tmp_path / "only", tmp_path / "m", mlflow=False)
    np.savez(tmp_path / "mixed.npz", train=np.zeros((4, 16, 16)), test=np.zeros((2, 12, 12)))
    with pytest.raises(ValueError, match=r"test images are 12x12.*training images 16x16"):
        fit_images(tmp_path / "mixed.npz", tmp_path / "m", mlflow=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="not a gananomaly model"):
        fit_images(tmp_path / "x.npy", tmp_path / "notes", mlflow=False)
    assert fits == [] and (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_file_names_that_are_not_utf8_are_scored_and_written(tmp_path):
    from gananomaly.pipelines.batch_score import score_file

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        _png(folder / f"{i}.png", seed=i)
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")  # Latin-1 bytes in a name
    _png(odd, seed=5)
    model = tmp_path / "m"
    GANAnomalyDetector(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0).fit(
        np.random.RandomState(0).rand(20, 1, 8, 8) * 255).save(model)
    score_file(model, folder, tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert len(lines) == 5 and any(line.startswith("caf\\xe9.png,") for line in lines)


def test_the_fitted_shape_tells_the_layout_at_scoring(tmp_path):
    """A model fitted with channels="last" refused the (n, C, H, W) arrays every image job passes
    it ("got 16 channels"), and one fitted channels-first (what `image fit` saves) refused the
    (n, H, W, C) a pyfunc client sends. At scoring the fitted (C, H, W) now decides the layout
    whenever it matches exactly one of the two; the scores are the same."""
    from gananomaly.pipelines.batch_score import score_file

    rng = np.random.RandomState(0)
    nhwc = rng.rand(24, 16, 16, 3)
    nchw = np.moveaxis(nhwc, -1, 1)
    last = GANAnomalyDetector(channels="last", epochs=1, encoder_epochs=1, random_state=0).fit(nhwc)
    first = GANAnomalyDetector(channels="first", epochs=1, encoder_epochs=1, random_state=0).fit(nchw)
    for det in (last, first):
        np.testing.assert_array_equal(det.score_samples(nchw[:5]), det.score_samples(nhwc[:5]))
    last.save(tmp_path / "m")
    np.save(tmp_path / "x.npy", nchw[:5])
    score_file(tmp_path / "m", tmp_path / "x.npy", tmp_path / "s.csv", progress=False)
    import pandas as pd

    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], last.score_samples(nhwc[:5]), rtol=1e-9)


def test_a_data_set_folder_is_scored_by_its_test_images_only(tmp_path):
    """`gananomaly score --input DATA` scored train/ images and ground_truth/ masks too (the masks
    labelled as outliers); `image score` took test/ only. Both take test/ now."""
    from gananomaly.pipelines.batch_score import score_file

    for sub, n in (("train/good", 12), ("test/good", 3), ("test/scratch", 2), ("ground_truth/scratch", 2)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for i in range(n):
            _png(tmp_path / "data" / sub / f"{i}.png", seed=i)
    X = np.stack([np.asarray(Image.open(tmp_path / "data" / "train" / "good" / f"{i}.png"), float)
                  for i in range(12)])
    GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(X).save(tmp_path / "m")
    score_file(tmp_path / "m", tmp_path / "data", tmp_path / "s.csv", progress=False)
    import pandas as pd

    # named relative to the folder given, as `image score` names them
    assert sorted(pd.read_csv(tmp_path / "s.csv")["file"]) == ["test/good/0.png", "test/good/1.png",
                                                               "test/good/2.png", "test/scratch/0.png",
                                                               "test/scratch/1.png"]


def _declared_png(path, width, height):
    """A valid 8-bit grey PNG of ``width`` x ``height`` black pixels, written row by row through a
    compressor: the file is small whatever the size its header declares."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row, parts = zlib.compressobj(9), bytes(width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))


def test_a_small_file_declaring_a_huge_image_is_skipped_before_it_is_decoded(tmp_path):
    """A ~140 KB PNG declaring 12000 x 12000 pixels was decoded whole before the resize (Pillow
    only warns below 179 million pixels): hundreds of MB for one file, gigabytes at 16 bits."""
    import resource

    for i in range(2):
        _png(tmp_path / f"{i}.png", seed=i)
    _declared_png(tmp_path / "huge.png", 12000, 12000)
    assert (tmp_path / "huge.png").stat().st_size < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = load_image_files(sorted(tmp_path.glob("*.png")), size=(8, 8), root=tmp_path)
    assert data.names == ["0.png", "1.png"]
    assert data.skipped[0][0] == "huge.png" and "declares 12000 x 12000 pixels" in data.skipped[0][1]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: nothing decoded


def test_hidden_copies_are_skipped_and_a_dangling_link_is_named(tmp_path):
    """.ipynb_checkpoints/ copies were read as training images, and a link to nothing was dropped
    without a word (the README says unreadable files are named)."""
    for i in range(3):
        _png(tmp_path / f"{i}.png", seed=i)
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _png(tmp_path / ".ipynb_checkpoints" / "0-checkpoint.png")
    _png(tmp_path / "._0.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    files = list_images(tmp_path)
    assert [f.name for f in files] == ["0.png", "1.png", "2.png", "gone.png"]
    data = load_image_files(files, root=tmp_path)
    assert data.names == ["0.png", "1.png", "2.png"] and [n for n, _ in data.skipped] == ["gone.png"]
    # the batch job hashed every listed file for --resume and died on the link instead of naming it
    from gananomaly.pipelines.batch_score import score_file

    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, validation_fraction=0, random_state=0)
    det.fit(np.stack([np.asarray(Image.open(tmp_path / f"{i}.png"), dtype=np.float64)[None] for i in range(3)]))
    out = tmp_path.parent / f"{tmp_path.name}-scores.csv"
    stats = score_file(det, tmp_path, out)
    assert stats["rows_scored"] == 3 and out.exists()


def test_an_overlay_never_takes_the_name_of_a_folder_other_overlays_need(tmp_path):
    """'x.png' (overlay x.png.png) next to a folder 'x.png.png/' of images: the file was written,
    then the folder's overlays failed with 'File exists', half the maps written and no table."""
    from gananomaly.pipelines.image_scoring import overlay_paths

    paths = overlay_paths(["x.png", "x.png.png/y.png"], tmp_path / "maps")
    rel = [p.relative_to(tmp_path / "maps").as_posix() for p in paths]
    assert rel == ["x.png_1.png", "x.png.png/y.png.png"]
