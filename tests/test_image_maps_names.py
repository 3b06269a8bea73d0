"""Overlay names of `gananomaly image score --maps DIR`: one file per image, never one image's
overlay over another's or over an input file. The names do not depend on the model, so a
stand-in with the detector's ``image_shape_`` and ``anomaly_map`` takes its place (no training)."""

import numpy as np
import pytest
from gananomaly.pipelines.image_files import ImageSet
from gananomaly.pipelines.image_scoring import overlay_paths, score_images, write_map_overlays
from PIL import Image

import gananomaly

X = np.random.RandomState(0).rand(8, 1, 8, 8) * 255


class _Detector:
    """What the overlays use of a detector fitted on 8x8 grey images."""

    image_shape_ = (1, 8, 8)

    def anomaly_map(self, images):
        return images.mean(axis=1) / 25.0


def test_array_images_get_one_overlay_each(tmp_path):
    data = ImageSet(X[:5], [f"score.npy[{i}]" for i in range(5)])
    written = write_map_overlays(_Detector(), data, tmp_path / "maps")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"score.npy_{i}_.png" for i in range(5)]
    assert sorted(written) == sorted((tmp_path / "maps").iterdir())


def test_overlay_names_keep_the_extension_and_are_unique(tmp_path):
    names = ["s/img00.png", "s/img00.jpg", "s/a b.png", "s/a_b.png", "s/a_b.png_1", "s/A_B.png"]
    expected = ["img00.png.png", "img00.jpg.png", "a_b.png.png", "a_b.png_2.png", "a_b.png_1.png", "A_B.png_3.png"]
    assert [p.name for p in overlay_paths(names, tmp_path)] == expected
    write_map_overlays(_Detector(), ImageSet(X[:6], names), tmp_path / "maps")
    assert sorted(p.name for p in (tmp_path / "maps" / "s").iterdir()) == sorted(expected)


def test_maps_that_would_replace_an_input_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(gananomaly, "load", lambda path: _Detector())
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["a.png", "a.png.png", "b.png"]):
        Image.fromarray(X[i, 0].astype(np.uint8)).save(src / name)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    with pytest.raises(ValueError, match=r"--maps .*'a\.png'.*replace the input"):
        score_images(tmp_path / "model", src, tmp_path / "s.csv", maps_dir=src)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before and not (tmp_path / "s.csv").exists()
    # overlays that replace nothing but land in the scored folder were scored as images next time
    (src / "a.png.png").unlink()
    for maps in (src, src / "maps"):
        with pytest.raises(ValueError, match=r"--maps .* is inside the folder being scored"):
            score_images(tmp_path / "model", src, tmp_path / "s.csv", maps_dir=maps)
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "b.png"] and not (tmp_path / "s.csv").exists()
