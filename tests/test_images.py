"""Image input: layouts, conv networks, scaling, resizing, invariances, persistence, quality on digits."""

import pickle

import numpy as np
import pytest
import torch
from gananomaly.pipelines.image_data import TEXTURE_DEFECTS, digits_one_class, texture_defects
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from torch import nn

import gananomaly
from gananomaly import GANAnomalyDetector
from gananomaly.conv import ConvDiscriminator, ConvEncoder, ConvGenerator, build_conv_networks, conv_spec, network_size
from gananomaly.model_format import with_record_digest

TINY = dict(epochs=2, encoder_epochs=2, random_state=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small conv batches run many times faster on one thread than on two when the two
    # cores are shared with other jobs (threads wait on each other); results are the same.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def grey():
    rng = np.random.RandomState(0)
    return rng.rand(80, 8, 8) * 16


@pytest.fixture(scope="module")
def fitted_grey(grey):
    return GANAnomalyDetector(**TINY).fit(grey)


def test_layouts_give_identical_models(grey):
    ref = GANAnomalyDetector(**TINY).fit(grey).score_samples(grey)
    for X, channels in [(grey[:, None], "auto"), (grey[..., None], "auto"), (grey[..., None], "last"),
                        (grey[:, None], "first")]:
        det = GANAnomalyDetector(channels=channels, **TINY).fit(X)
        assert det.image_shape_ == (1, 8, 8) and det.n_features_in_ == 64
        np.testing.assert_array_equal(det.score_samples(X), ref)
        # a fitted model accepts every layout of the same images
        np.testing.assert_array_equal(det.score_samples(grey), ref)


def test_rgb_channel_last_equals_channel_first():
    rng = np.random.RandomState(1)
    X = rng.rand(40, 3, 12, 12)
    first = GANAnomalyDetector(**TINY).fit(X)
    last = GANAnomalyDetector(**TINY).fit(np.moveaxis(X, 1, 3))
    assert first.image_shape_ == last.image_shape_ == (3, 12, 12)
    np.testing.assert_array_equal(first.score_samples(X), last.score_samples(np.moveaxis(X, 1, 3)))
    # ambiguous (n, 3, 5, 3): "auto" reads axis 1 as channels, "last" reads axis 3
    Y = rng.rand(20, 3, 5, 3)
    assert GANAnomalyDetector(**TINY).fit(Y).image_shape_ == (3, 5, 3)
    assert GANAnomalyDetector(channels="last", **TINY).fit(Y).image_shape_ == (3, 3, 5)


@pytest.mark.parametrize("objective,encoder", [("gan", "izif"), ("wgan-gp", "izif"), ("gan", "bigan")])
def test_image_input_selects_conv_networks(grey, objective, encoder):
    det = GANAnomalyDetector(objective=objective, encoder=encoder, **TINY).fit(grey)
    assert det.arch_["kind"] == "conv"
    assert isinstance(det.generator_, ConvGenerator) and isinstance(det.encoder_, ConvEncoder)
    assert isinstance(det.discriminator_, ConvDiscriminator)
    d_mods = list(det.discriminator_.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d_mods)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in det.generator_.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in det.encoder_.modules()) or det.arch_["size"] == 8
    has_sn = any(torch.nn.utils.parametrize.is_parametrized(m) for m in d_mods)
    assert has_sn == (objective == "gan")
    assert det.discriminator_.joint == (encoder == "bigan")
    x = torch.zeros(2, 1, 8, 8)
    z = torch.zeros(2, det.arch_["latent_dim"])
    assert det.discriminator_.features(x, z).shape == (2, det.discriminator_.feature_dim)
    if encoder == "bigan":
        with pytest.raises(ValueError, match="latent code"):
            det.discriminator_.features(x)
    assert np.isfinite(det.score_samples(grey)).all()


def test_network_parameter_forces_mlp_or_conv(grey):
    det = GANAnomalyDetector(network="mlp", **TINY).fit(grey)
    assert det.arch_["kind"] == "mlp" and det.arch_["n_features"] == 64
    assert det.image_shape_ == (1, 8, 8)
    assert det.score_samples(grey).shape == (80,)
    # image in, image out, as for a conv model: maps (n, H, W), reconstructions and samples (n, C, H, W)
    assert det.anomaly_map(grey[:3]).shape == (3, 8, 8)
    assert det.reconstruct(grey[:3]).shape == det.generate(3).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="network='conv' needs image input"):
        GANAnomalyDetector(network="conv", **TINY).fit(grey.reshape(80, 64))
    flat = GANAnomalyDetector(**TINY).fit(grey.reshape(80, 64))
    assert flat.arch_["kind"] == "mlp" and flat.image_shape_ is None


@pytest.mark.parametrize("hw,size", [((8, 8), 8), ((5, 7), 8), ((16, 16), 16), ((20, 20), 32), ((33, 10), 64),
                                     ((100, 60), 64)])
def test_network_size_rule(hw, size):
    assert network_size(*hw) == size


def test_resize_and_reconstruct_shapes():
    rng = np.random.RandomState(2)
    X = rng.rand(30, 20, 12)
    det = GANAnomalyDetector(**TINY).fit(X)
    assert det.arch_["size"] == 32
    assert det.reconstruct(X[:4]).shape == (4, 1, 20, 12)
    assert det.generate(3, random_state=0).shape == (3, 1, 20, 12)
    forced = GANAnomalyDetector(image_size=16, **TINY).fit(X)
    assert forced.arch_["size"] == 16
    with pytest.raises(ValueError, match="power of two"):
        GANAnomalyDetector(image_size=24, **TINY).fit(X)


def test_conv_networks_for_every_size():
    for size in (8, 16, 32, 64):
        for c in (1, 3):
            gen, disc, enc = build_conv_networks(conv_spec(c, size, spectral_norm=True))
            z = torch.randn(2, gen.project[0].in_features)
            x = gen(z)
            assert x.shape == (2, c, size, size)
            assert enc(x).shape == z.shape
            assert disc.features(x).shape == (2, disc.feature_dim) and disc(x).shape == (2,)


def test_per_channel_input_scaling():
    rng = np.random.RandomState(3)
    X = rng.rand(30, 3, 8, 8) * np.array([1.0, 10.0, 100.0])[None, :, None, None] + 5
    det = GANAnomalyDetector(**TINY).fit(X)
    assert det.input_mean_.shape == (3,) and det.input_scale_.shape == (3,)
    np.testing.assert_allclose(det.input_mean_, X.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(det.input_scale_, X.std(axis=(0, 2, 3)))
    # a constant channel keeps scale 1
    X[:, 1] = 7.0
    assert GANAnomalyDetector(**TINY).fit(X).input_scale_[1] == 1.0


def test_wrong_images_at_scoring_time(grey, fitted_grey):
    det = fitted_grey
    with pytest.raises(ValueError, match=r"3 channel\(s\) \(RGB\) but this detector was fitted on images with 1"):
        det.score_samples(np.repeat(grey[:, None], 3, axis=1))
    with pytest.raises(ValueError, match="images of 9x8 pixels but this detector was fitted on 8x8"):
        det.score_samples(np.zeros((2, 9, 8)))
    with pytest.raises(ValueError, match=r"fitted on images of shape \(1, 8, 8\)"):
        det.score_samples(grey.reshape(80, 64))
    with pytest.raises(ValueError, match="1 .grey. or 3 .RGB."):
        det.score_samples(np.zeros((2, 2, 8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        det.score_samples(np.full((2, 8, 8), np.nan))
    flat = GANAnomalyDetector(**TINY).fit(grey.reshape(80, 64))
    with pytest.raises(ValueError, match="fitted on 2-D data with 64 features"):
        flat.score_samples(grey)
    with pytest.raises(ValueError, match="minimum of 2"):
        GANAnomalyDetector(**TINY).fit(grey[:1])


@pytest.mark.parametrize("objective,encoder,n_refine_steps", [("gan", "izif", 0), ("wgan-gp", "bigan", 3)])
def test_image_row_scores_independent_of_batch(grey, objective, encoder, n_refine_steps):
    det = GANAnomalyDetector(objective=objective, encoder=encoder, n_refine_steps=n_refine_steps, **TINY).fit(grey)
    X = np.concatenate([grey, 16 * np.random.RandomState(5).rand(70, 8, 8)])
    full = det.score_samples(X)
    alone = np.array([det.score_samples(X[i : i + 1])[0] for i in range(0, len(X), 9)])
    # Measured: bit-identical on CPU; 1e-6 leaves room for other conv kernel paths.
    np.testing.assert_allclose(alone, full[::9], rtol=0, atol=1e-6)
    perm = np.random.RandomState(1).permutation(len(X))
    np.testing.assert_allclose(det.score_samples(X[perm]), full[perm], rtol=0, atol=1e-6)
    np.testing.assert_allclose(det.score_samples(X[80:]), full[80:], rtol=0, atol=1e-6)


def test_image_same_seed_same_scores(grey, fitted_grey):
    again = GANAnomalyDetector(**TINY).fit(grey)
    np.testing.assert_array_equal(again.score_samples(grey), fitted_grey.score_samples(grey))
    other = GANAnomalyDetector(**{**TINY, "random_state": 1}).fit(grey)
    assert np.abs(other.score_samples(grey) - fitted_grey.score_samples(grey)).max() > 1e-3


def test_batch_norm_is_frozen_when_scoring(grey, fitted_grey):
    det = fitted_grey
    ref = det.score_samples(grey)
    det.generator_.train(), det.encoder_.train()
    np.testing.assert_array_equal(det.score_samples(grey), ref)
    assert not det.generator_.training and not det.encoder_.training
    bn = det.generator_.project[1]
    assert isinstance(bn, nn.BatchNorm1d)
    stats = bn.running_mean.clone()
    det.score_samples(grey * 3)
    assert torch.equal(bn.running_mean, stats)


def test_discriminator_score_reads_conv_features_not_output(grey, fitted_grey):
    det = pickle.loads(pickle.dumps(fitted_grey))
    ref = det.score_components(grey)["discriminator"].to_numpy()
    with torch.no_grad():
        for p in det.discriminator_.out.parameters():
            p.add_(torch.randn_like(p))
    np.testing.assert_array_equal(det.score_components(grey)["discriminator"].to_numpy(), ref)


def test_image_model_save_load_and_pickle(tmp_path, grey, fitted_grey):
    path = tmp_path / "model"
    fitted_grey.save(path)
    loaded = gananomaly.load(path)
    assert loaded.image_shape_ == (1, 8, 8) and loaded.arch_ == fitted_grey.arch_
    np.testing.assert_array_equal(loaded.score_samples(grey), fitted_grey.score_samples(grey))
    np.testing.assert_array_equal(loaded.predict(grey[..., None]), fitted_grey.predict(grey))
    with pytest.raises(ValueError, match="channel"):
        loaded.score_samples(np.zeros((1, 3, 8, 8)))
    restored = pickle.loads(pickle.dumps(fitted_grey))
    np.testing.assert_array_equal(restored.score_samples(grey), fitted_grey.score_samples(grey))
    # a 2-D model round-trips with no image shape
    flat = GANAnomalyDetector(**TINY).fit(grey.reshape(80, 64))
    flat.save(tmp_path / "flat")
    assert gananomaly.load(tmp_path / "flat").image_shape_ is None


def test_image_model_rejects_tampered_image_shape(tmp_path, fitted_grey):
    import json

    fitted_grey.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fitted"]["extra"]["image_shape"] = [3, 8, 8]
    cfg_path.write_text(json.dumps(with_record_digest(cfg)))  # forged to match
    with pytest.raises(ValueError, match="image_shape"):
        gananomaly.load(tmp_path / "m")


def test_builtin_image_data_sets():
    X_train, X_test, y_test = digits_one_class(3)
    assert X_train.shape[1:] == (8, 8) and X_test.shape[0] == y_test.shape[0]
    assert 0 < y_test.mean() < 1 and X_train.max() <= 16
    with pytest.raises(ValueError, match="digit"):
        digits_one_class(10)
    train, test, kinds = texture_defects(n_train=50, n_test_normal=20, n_per_defect=10, seed=0)
    assert train.shape == (50, 32, 32) and test.shape == (60, 32, 32)
    assert set(kinds) == {"normal", *TEXTURE_DEFECTS}
    assert 0 <= test.min() and test.max() <= 1
    # the same seed gives the same patches, and defects change the patch they are planted on
    again = texture_defects(n_train=50, n_test_normal=20, n_per_defect=10, seed=0)
    np.testing.assert_array_equal(again[1], test)


def test_digits_combined_score_beats_isolation_forest():
    """Quality bar: on two digits of the one-class protocol, the mean AUROC of the combined
    score is at least IsolationForest's on the raw pixels, measured here with the same split.
    Digits 2 and 8 are the two on which IsolationForest is weakest (0.953, 0.920); seed 0 with
    these shortened settings measured 0.970 and 0.947. The full 10-digit table with default
    settings is in docs/images.md."""
    gan, iso = [], []
    for digit in (2, 8):
        X_train, X_test, y_test = digits_one_class(digit, seed=0)
        det = GANAnomalyDetector(epochs=150, encoder_epochs=100, random_state=0).fit(X_train)
        gan.append(roc_auc_score(y_test, det.score_components(X_test)["combined"]))
        iforest = IsolationForest(random_state=0).fit(X_train.reshape(len(X_train), -1))
        iso.append(roc_auc_score(y_test, -iforest.score_samples(X_test.reshape(len(X_test), -1))))
    assert min(gan) >= 0.93, gan
    assert np.mean(gan) >= np.mean(iso), (gan, iso)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_conv_cuda_bf16_autocast():
    X_train, X_test, y_test = digits_one_class(5, seed=0)
    det = GANAnomalyDetector(epochs=200, device="cuda", precision="auto", random_state=0).fit(X_train)
    assert det.device_.type == "cuda" and det.score_config_.amp_dtype == torch.bfloat16
    assert next(det.generator_.parameters()).is_cuda
    auroc = roc_auc_score(y_test, det.score_components(X_test)["combined"])
    assert auroc >= 0.95
    full = det.score_samples(X_test)
    # bf16 kernels may differ between batch shapes: close, not bit-identical (that is promised on CPU)
    np.testing.assert_allclose(det.score_samples(X_test[:7]), full[:7], rtol=0, atol=1e-2)
    X_rgb = np.random.RandomState(0).rand(256, 3, 32, 32)
    rgb = GANAnomalyDetector(epochs=1, device="cuda", random_state=0).fit(X_rgb)
    assert np.isfinite(rgb.score_samples(X_rgb)).all()
    from gananomaly.pipelines.image import conv_throughput

    table = conv_throughput((32, 64), n_images=512, device="cuda", repeats=2)
    assert set(table["device"]) == {"cuda:0"} and set(table["precision"]) == {"torch.bfloat16"}
    assert (table["score_images_per_s"].astype(float) > 0).all()


def test_conv_throughput_reports_images_per_second():
    from gananomaly.pipelines.image import conv_throughput

    table = conv_throughput((8, 16), channels=1, n_images=64, repeats=1)
    assert list(table.index) == ["8x8", "16x16"]
    assert (table["score_images_per_s"].astype(float) > 0).all()
    assert (table["train_images_per_s"].astype(float) > 0).all()
    assert set(table["device"]) == {"cpu"}
    bf16 = conv_throughput((8,), channels=1, n_images=64, repeats=1, params={"precision": "bf16"})
    assert set(bf16["precision"]) == {"torch.bfloat16"}  # params override the function's own defaults
    with pytest.raises(ValueError, match="extra_epochs"):
        conv_throughput((8,), channels=1, n_images=64, extra_epochs=0)


def test_anomaly_map_lights_up_planted_defects():
    """Per-pixel maps at the input's size; the planted defect's pixels rank above the rest of
    their image (a map that ignored the defect, or pointed elsewhere, sits near 0.5)."""
    from gananomaly.pipelines.image_data import texture_defects

    from gananomaly.fidelity import GeneratorFidelityWarning
    from gananomaly.metrics import pro_score

    X_train, X_test, kinds, masks = texture_defects(n_train=300, n_test_normal=40, n_per_defect=20, size=16,
                                                    seed=0, return_masks=True)
    # 20 epochs leave the conv generator far from the patches: the fit says so
    with pytest.warns(GeneratorFidelityWarning, match="has not learned"):
        det = GANAnomalyDetector(epochs=20, random_state=0).fit(X_train)
    assert det.fidelity_["fidelity"] < 0.5 and det.history_["fidelity"]
    for component in ("reconstruction", "discriminator", "combined"):
        maps = det.anomaly_map(X_test, component=component)
        assert maps.shape == X_test.shape and np.isfinite(maps).all() and (maps >= 0).all()
    maps = det.anomaly_map(X_test)
    for kind in ("scratch", "spot"):
        auc = roc_auc_score(masks[kinds == kind].ravel(), maps[kinds == kind].ravel())
        pro = pro_score(masks[kinds == kind], maps[kinds == kind])
        print(kind, auc, pro)
        assert auc >= 0.72 and pro >= 0.35, (kind, auc, pro)  # a random map: 0.5 and 0.15
    # one row's map does not depend on the rest of the batch
    np.testing.assert_allclose(det.anomaly_map(X_test[45:46]), maps[45:46], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="component"):
        det.anomaly_map(X_test[:2], component="latent")


def test_texture_defects_beat_isolation_forest_with_default_settings():
    """Quality bar on the texture task (a smaller version of the benchmark's): with default
    settings every defect kind scores at least IsolationForest's AUROC on the raw pixels
    and the mean at least 0.1 above it. The previous image score (the mean squared residual
    over all pixels, knn term on) measured noise 0.47 against IsolationForest's 0.58 and a
    mean of 0.77 against 0.69 on the full task: it fails this test. Default settings except the
    training length: about 500 discriminator steps (84 epochs here) instead of the default's up
    to 10,000, which the generator needs to learn the texture (benchmarks/IMAGES.md measures
    both at full length) and which would take minutes of the suite; the score already ranks
    defects after 500."""
    X_train, X_test, kinds = texture_defects(n_train=400, n_test_normal=100, n_per_defect=25, seed=1)
    det = GANAnomalyDetector(epochs=84, early_stopping=True, random_state=0).fit(X_train)
    assert det.score_config_.map_scale.shape == (2, 32, 32) and det._knn_weight() == 0.0
    ours = -det.score_samples(X_test)
    flat = X_train.reshape(len(X_train), -1)
    iso = -IsolationForest(random_state=0).fit(flat).score_samples(X_test.reshape(len(X_test), -1))
    normal = kinds == "normal"
    gan, base = {}, {}
    for kind in TEXTURE_DEFECTS:
        sel = normal | (kinds == kind)
        gan[kind] = roc_auc_score(~normal[sel], ours[sel])
        base[kind] = roc_auc_score(~normal[sel], iso[sel])
    print(gan, base)
    assert all(gan[k] >= base[k] for k in TEXTURE_DEFECTS), (gan, base)
    assert np.mean(list(gan.values())) >= np.mean(list(base.values())) + 0.1, (gan, base)
    # the map the score pools: a typical training pixel is about 2 (two bands, each 1 on average)
    train_map = det.anomaly_map(X_train[:100], component="reconstruction")
    assert 1.0 < float(np.median(train_map.mean(axis=(1, 2)))) < 3.0


def test_image_map_statistics_are_validated_on_load(tmp_path, fitted_grey):
    import json

    from safetensors.torch import load_file, save_file

    fitted_grey.save(tmp_path / "m")
    weights, cfg_path = tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json"
    good = load_file(weights)
    assert good["score.map_scale"].shape == (2, 8, 8)
    for bad in (-good["score.map_scale"], good["score.map_scale"][:1], good["score.map_scale"] * float("nan")):
        save_file({**good, "score.map_scale": bad.contiguous()}, weights)
        with pytest.raises(ValueError, match="map statistics"):
            gananomaly.load(tmp_path / "m")
    save_file({k: v for k, v in good.items() if k != "score.map_scale"}, weights)
    with pytest.raises(ValueError, match="score.map_scale"):
        gananomaly.load(tmp_path / "m")
    # an image model of format 3 (before the map statistics) is refused with a message to refit
    save_file(good, weights)
    cfg = json.loads(cfg_path.read_text())
    cfg["format_version"] = 3
    cfg_path.write_text(json.dumps(with_record_digest(cfg)))  # forged to match
    with pytest.raises(ValueError, match="older gananomaly.*map statistics.*refit"):
        gananomaly.load(tmp_path / "m")


def test_tracked_reconstruction_grid_shows_the_inputs_of_grey_images(grey, monkeypatch):
    """Grey (n, H, W) input: the grid's top row (inputs) used to be dropped, since the inputs
    kept the caller's layout while reconstructions come back (n, C, H, W)."""
    import gananomaly.tracking_log as tracking_log

    tiles = {}
    monkeypatch.setattr(tracking_log, "plot_grid", lambda arr, title, **kw: tiles.setdefault(title, arr.shape[0]))

    class Store:
        def log_figure(self, figure, name):
            pass

    det = GANAnomalyDetector(**TINY).fit(grey)
    tracking_log.log_image_grids(Store(), det, grey[:5], det.image_shape_)
    assert tiles["inputs (top) and reconstructions (bottom)"] == 10
