import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gananomaly import Callback, GANAnomalyDetector, scoring

FAST = dict(epochs=3, encoder_epochs=3, hidden_dims=(16,), random_state=0)


# Every check of scikit-learn's estimator suite passes; none is listed as an expected failure.
@parametrize_with_checks([GANAnomalyDetector(**FAST)])
def test_sklearn_contract(estimator, check):
    check(estimator)


# The latent distance alone models the codes of three blobs as one Gaussian: a weaker
# detector of far outliers on its own, a help in the combination.
@pytest.mark.parametrize("component,floor", [("discriminator", 0.95), ("reconstruction", 0.95), ("latent", 0.85),
                                             ("combined", 0.95)])
def test_blobs_far_outliers_every_component(blobs, fitted_blobs, component, floor):
    _, X_test, y_test = blobs
    comps = fitted_blobs.score_components(X_test)
    assert roc_auc_score(y_test, comps[component]) >= floor


@pytest.mark.parametrize("objective,encoder", [("gan", "izif"), ("gan", "bigan"), ("wgan-gp", "bigan")])
def test_variants_detect_far_outliers(blobs, objective, encoder):
    X_train, X_test, y_test = blobs
    det = GANAnomalyDetector(objective=objective, encoder=encoder, epochs=30, random_state=0).fit(X_train)
    assert roc_auc_score(y_test, -det.score_samples(X_test)) >= 0.9
    assert len(det.history_["d_loss"]) == 30


def test_outlier_contract(blobs, fitted_blobs):
    X_train, X_test, _ = blobs
    det = fitted_blobs
    s = det.score_samples(X_test)
    np.testing.assert_array_equal(det.decision_function(X_test), s - det.offset_)
    pred = det.predict(X_test)
    assert pred.dtype.kind == "i" and set(np.unique(pred)) <= {-1, 1}
    np.testing.assert_array_equal(pred == -1, det.decision_function(X_test) < 0)
    # score_samples is minus the combined anomaly score
    np.testing.assert_array_equal(s, -det.score_components(X_test)["combined"].to_numpy())
    # the far outliers are flagged, most normals are not (Tukey's fence for "auto")
    assert (pred[200:] == -1).mean() > 0.9
    assert (pred[:200] == 1).mean() > 0.9


@pytest.mark.parametrize("contamination", [0.05, 0.2, 0.5])
def test_contamination_sets_training_outlier_fraction(blobs, contamination):
    X_train, _, _ = blobs
    det = GANAnomalyDetector(contamination=contamination, epochs=5, random_state=0)
    labels = det.fit_predict(X_train)
    assert abs((labels == -1).mean() - contamination) <= 1.0 / len(X_train)
    np.testing.assert_array_equal(labels, det.predict(X_train))


@pytest.mark.parametrize("component", ["discriminator", "reconstruction", "latent"])
def test_component_parameter_selects_score(blobs, fitted_blobs, component):
    X_train, X_test, _ = blobs
    det = clone(fitted_blobs).set_params(component=component).fit(X_train)
    comps = det.score_components(X_test)
    np.testing.assert_array_equal(det.score_samples(X_test), -comps[component].to_numpy())


def test_components_are_standardised_on_training_data(blobs, fitted_blobs):
    X_train, _, _ = blobs
    comps = fitted_blobs.score_components(X_train)
    inner = fitted_blobs._raw_scores(fitted_blobs._prepare(X_train, None)[0])
    cfg = fitted_blobs.score_config_
    std = {name: (inner[name] - cfg.loc[name]) / cfg.scale[name] for name in (*scoring.COMPONENTS, "knn_local")}
    for name in (*scoring.COMPONENTS, "knn_local"):
        q25, q50, q75 = np.percentile(std[name], [25, 50, 75])
        assert abs(q50) < 1e-9 and abs((q75 - q25) - 1) < 1e-9
        if name != "knn":
            np.testing.assert_allclose(comps.get(name, std[name]), std[name], atol=1e-12)
    # knn mixes the standardised distance and local ratio
    np.testing.assert_allclose(comps["knn"], 0.5 * (std["knn"] + std["knn_local"]), atol=1e-12)
    assert scoring.KNN_LOCAL_SHARE == 0.5
    raw = fitted_blobs.score_components(X_train, raw=True)
    assert (raw[["discriminator", "reconstruction", "latent", "knn"]] >= 0).all().all()  # residuals, distances
    np.testing.assert_array_equal(raw["knn"], inner["knn"])  # the distance alone


def test_latent_score_is_mahalanobis_distance_of_the_codes(blobs, fitted_blobs):
    """``latent`` is the squared Mahalanobis distance of E(x) from the training codes,
    with the location and (shrunk) covariance estimated on the training rows."""
    from sklearn.covariance import LedoitWolf

    X_train, X_test, _ = blobs
    det = fitted_blobs
    with torch.no_grad():
        codes = {name: det.encoder_(det._to_tensor(X)).double().numpy() for name, X in
                 (("train", X_train), ("test", X_test))}
    lw = LedoitWolf().fit(codes["train"])
    expected = lw.mahalanobis(codes["test"])
    got = det.score_components(X_test, raw=True)["latent"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # about chi-square with latent_dim degrees of freedom on the training rows
    k = det.arch_["latent_dim"]
    assert 0.5 * k < det.score_components(X_train, raw=True)["latent"].mean() < 1.5 * k


def test_knn_score_is_the_mean_distance_to_training_rows_in_d_feature_space(blobs, fitted_blobs):
    """``knn``: mean distance of D's features of x to those of its 5 nearest training rows;
    a training row is never its own neighbour."""
    from sklearn.neighbors import NearestNeighbors

    X_train, X_test, _ = blobs
    det = fitted_blobs
    with torch.no_grad():
        feats = {name: det.discriminator_.features(det._to_tensor(X)).double().numpy() for name, X in
                 (("train", X_train), ("test", X_test))}
    nn = NearestNeighbors(n_neighbors=6).fit(feats["train"])
    raw_test = det.score_components(X_test, raw=True)["knn"].to_numpy()
    # float32 distances from the expanded product |a|^2 + |b|^2 - 2ab, of features computed in
    # blocks (here: in one batch): about 1e-4 of the typical distance apart where neighbours are close
    tol = {"rtol": 1e-4, "atol": 1e-4 * float(np.median(nn.kneighbors(feats["test"], n_neighbors=5)[0]))}
    np.testing.assert_allclose(raw_test, nn.kneighbors(feats["test"], n_neighbors=5)[0].mean(1), **tol)
    # a training row leaves itself out, at fit time and when scored again, so predict() on
    # the training data reproduces the contamination the offset was set for
    raw_train = det.score_components(X_train, raw=True)["knn"].to_numpy()
    np.testing.assert_allclose(raw_train, nn.kneighbors(feats["train"])[0][:, 1:].mean(1), **tol)
    assert det.score_config_.loc["knn"] == pytest.approx(np.median(raw_train), rel=1e-12)


def test_combine_formula_and_weights(blobs, fitted_blobs):
    from gananomaly.scoring import combine

    rng = np.random.RandomState(0)
    std = {k: rng.randn(50) for k in ("discriminator", "reconstruction", "latent", "knn")}
    np.testing.assert_allclose(
        combine(std, 0.2, 0.5, 3.0),
        0.8 * (std["reconstruction"] + 0.5 * std["latent"]) + 0.2 * std["discriminator"] + 3.0 * std["knn"])
    np.testing.assert_allclose(combine(std, 1.0), std["discriminator"])
    np.testing.assert_allclose(combine(std, 0.0), std["reconstruction"])
    # the estimator's combined column follows its weights, component by component
    _, X_test, _ = blobs
    det = clone(fitted_blobs)
    det.__dict__.update({k: v for k, v in fitted_blobs.__dict__.items() if k.endswith("_")})
    comps = det.score_components(X_test)
    for weight, lw, kw in ((0.1, 0.5, 3.0), (0.5, 0.0, 0.0), (0.0, 1.0, 1.0)):
        det.set_params(weight=weight, latent_weight=lw, knn_weight=kw)
        np.testing.assert_allclose(det.score_components(X_test)["combined"],
                                   (1 - weight) * (comps["reconstruction"] + lw * comps["latent"])
                                   + weight * comps["discriminator"] + kw * comps["knn"], atol=1e-10)


def test_trained_encoder_and_generator_beat_untrained_ones(blobs):
    """Training must improve on its starting point: the encoder's reconstruction residual
    and the generator's fidelity both beat the same networks before any step."""
    X_train, _, _ = blobs
    trained = GANAnomalyDetector(epochs=60, random_state=0).fit(X_train)
    untrained = GANAnomalyDetector(epochs=1, encoder_epochs=0, learning_rate=1e-9, random_state=0).fit(X_train)
    rec = trained.score_components(X_train, raw=True)["reconstruction"].median()
    rec0 = untrained.score_components(X_train, raw=True)["reconstruction"].median()
    assert rec < 0.5 * rec0, (rec, rec0)
    assert trained.fidelity_["fidelity"] > untrained.fidelity_["fidelity"] + 0.4


def test_the_latent_cycle_term_teaches_the_encoder_to_invert_the_generator(blobs, tmp_path):
    """ziz_weight adds ||E(G(z)) - z||^2 on noise to the encoder's training: the codes of generated
    rows come back far closer to the noise that drew them; ziz_weight=0 (the default) is the plain
    izif encoder. The weight is saved with the model and a negative one refused."""
    X_train, _, _ = blobs

    def cycle_error(det):
        z = torch.randn(512, det.arch_["latent_dim"], generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return float(((det.encoder_(det.generator_(z)) - z) ** 2).mean())

    plain = GANAnomalyDetector(epochs=20, random_state=0).fit(X_train)
    cycled = GANAnomalyDetector(epochs=20, ziz_weight=1.0, random_state=0).fit(X_train)
    # the GAN phase is the same fit: only the encoder differs
    torch.testing.assert_close(plain.generator_.state_dict(), cycled.generator_.state_dict(), rtol=0, atol=0)
    assert cycle_error(cycled) < 0.5 * cycle_error(plain), (cycle_error(cycled), cycle_error(plain))
    cycled.save(tmp_path / "m")
    from gananomaly import load

    assert load(tmp_path / "m").ziz_weight == 1.0
    with pytest.raises(ValueError, match="ziz_weight"):
        GANAnomalyDetector(ziz_weight=-1.0).fit(X_train)


def test_gradient_penalty_holds_the_critic_near_unit_gradient(blobs):
    """WGAN-GP's penalty keeps ||grad_x D|| near 1 between real and generated rows; without
    it the critic's gradients grow without bound. (A zeroed penalty used to pass every test.)"""
    X_train, _, _ = blobs

    def grad_norm(gp):
        det = GANAnomalyDetector(objective="wgan-gp", gp_weight=gp, epochs=60, encoder_epochs=1,
                                 validation_fraction=0.0, random_state=0).fit(X_train)
        x = det._to_tensor(X_train[:256])
        fake = torch.from_numpy(det._to_tensor(det.generate(256, random_state=1)).numpy())
        alpha = torch.rand(256, 1, generator=torch.Generator().manual_seed(0))
        inter = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
        g, = torch.autograd.grad(det.discriminator_(inter).sum(), inter)
        return float(g.norm(dim=1).mean())

    with_gp, without = grad_norm(10.0), grad_norm(0.0)
    assert abs(with_gp - 1) < 0.25, with_gp
    assert without > 1.5 * with_gp, (with_gp, without)


def test_rows_just_off_a_tight_cluster_are_anomalous_for_the_local_knn_term():
    """dense_cluster: a tight cluster of 40 rows beside two wide ones, anomalies just off the
    tight one. A global density (the knn term as the distance alone) calls them normal, because
    the tight cluster is dense; the local ratio sees that they are far for that cluster. Both
    scores come from the same short fits (the term under test reads D's features; the default
    fit's figures are the benchmark's)."""
    from benchmarks.datasets import dense_cluster

    for seed in (1, 2):
        split = dense_cluster(seed)
        det = GANAnomalyDetector(epochs=10, encoder_epochs=10, random_state=seed).fit(split.X_train)
        comps = det.score_components(split.X_test)
        cfg, w = det.score_config_, det._knn_weight()
        distance = (det.score_components(split.X_test, raw=True)["knn"] - cfg.loc["knn"]) / cfg.scale["knn"]
        distance_alone = comps["combined"] - w * comps["knn"] + w * distance
        print(seed, roc_auc_score(split.y_test, comps["combined"]), roc_auc_score(split.y_test, distance_alone))
        assert roc_auc_score(split.y_test, comps["knn"]) >= 0.95
        assert roc_auc_score(split.y_test, comps["combined"]) >= 0.9
        assert roc_auc_score(split.y_test, distance_alone) < 0.5  # the failure the local term removes


def test_a_row_a_hair_off_a_value_repeated_in_training_does_not_outrank_a_gross_outlier():
    """Most training rows stuck at one value: the local k-NN term's floor comes from the rows that
    spread, so the combined score keeps a gross outlier first."""
    rng = np.random.RandomState(0)
    X = np.vstack([np.zeros((300, 4)), rng.randn(200, 4)])
    det = GANAnomalyDetector(epochs=3, encoder_epochs=3, random_state=0).fit(X)
    combined = det.score_components(np.array([[0.05] * 4, [8.0] * 4]))["combined"].to_numpy()
    assert combined[0] < combined[1] and np.isfinite(combined).all()


# Without refinement a row gets the same bits in any batch. The refinement's backward
# pass runs matrix kernels whose rounding can depend on a row's position in the block:
# its codes move by a float32 unit in the last place, which the latent distance carries
# into the scores at about 1e-7 relative; any statistic taken over the batch would move
# them by orders of magnitude more.
@pytest.mark.parametrize("n_refine_steps,tol", [(0, 1e-9), (5, 1e-6)])
def test_row_score_independent_of_batch_and_order(blobs, n_refine_steps, tol):
    """No statistic depends on the batch: a row scores the same alone, in any batch, in any order."""
    X_train, X_test, _ = blobs
    det = GANAnomalyDetector(epochs=5, n_refine_steps=n_refine_steps, random_state=0).fit(X_train)
    full = det.score_samples(X_test)
    alone = np.array([det.score_samples(X_test[i : i + 1])[0] for i in range(0, len(X_test), 7)])
    np.testing.assert_allclose(alone, full[::7], rtol=tol, atol=tol)
    perm = np.random.RandomState(1).permutation(len(X_test))
    np.testing.assert_allclose(det.score_samples(X_test[perm]), full[perm], rtol=tol, atol=tol)
    # a batch made only of outliers is not rescaled to look normal
    np.testing.assert_allclose(det.score_samples(X_test[200:]), full[200:], rtol=tol, atol=tol)


def test_refinement_lowers_reconstruction_residual(blobs):
    X_train, X_test, _ = blobs
    base = GANAnomalyDetector(epochs=10, random_state=0).fit(X_train)
    refined = clone(base).set_params(n_refine_steps=20).fit(X_train)
    r0 = base.score_components(X_test, raw=True)["reconstruction"].mean()
    r1 = refined.score_components(X_test, raw=True)["reconstruction"].mean()
    assert r1 < r0


def test_same_seed_same_scores_different_seed_different(blobs):
    X_train, X_test, _ = blobs
    a = GANAnomalyDetector(epochs=5, dropout=0.2, random_state=3).fit(X_train).score_samples(X_test)
    b = GANAnomalyDetector(epochs=5, dropout=0.2, random_state=3).fit(X_train).score_samples(X_test)
    c = GANAnomalyDetector(epochs=5, dropout=0.2, random_state=4).fit(X_train).score_samples(X_test)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    rs = np.random.RandomState(7)
    d = GANAnomalyDetector(epochs=5, random_state=rs).fit(X_train).score_samples(X_test)
    assert np.isfinite(d).all()


def test_fit_leaves_global_torch_rng_alone(blobs):
    X_train, _, _ = blobs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    GANAnomalyDetector(epochs=2, random_state=0).fit(X_train)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


# ---- the failure modes of other GAN detectors, made impossible by design ----------------

def test_discriminator_score_ignores_output_layer(blobs, fitted_blobs):
    """The discriminator score comes from inner features, not from the final logit/sigmoid."""
    _, X_test, _ = blobs
    det = pickle.loads(pickle.dumps(fitted_blobs))
    before = det.score_components(X_test)
    with torch.no_grad():
        for p in det.discriminator_.out.parameters():
            p.add_(torch.randn_like(p) * 10)
    after = det.score_components(X_test)
    pd.testing.assert_frame_equal(before, after)


def test_dropout_is_off_when_scoring(blobs):
    X_train, X_test, _ = blobs
    det = GANAnomalyDetector(epochs=3, dropout=0.5, random_state=0).fit(X_train)
    det.discriminator_.train()  # even if someone flips a module back to training mode
    a = det.score_samples(X_test)
    b = det.score_samples(X_test)
    np.testing.assert_array_equal(a, b)
    assert not det.discriminator_.training


def test_each_sample_gets_its_own_latent_code(blobs, fitted_blobs):
    """Not one fixed latent point for every test sample: G(E(x)) follows x."""
    _, X_test, _ = blobs
    rec = fitted_blobs.reconstruct(X_test[:200])
    assert np.unique(rec.round(6), axis=0).shape[0] == 200
    corr = np.corrcoef(rec[:, 0], X_test[:200, 0])[0, 1]
    assert corr > 0.6  # a 2-D latent space cannot hold the 5-D within-blob noise


def test_generator_did_not_collapse(fitted_blobs, blobs):
    X_train, _, _ = blobs
    # the minimax GAN (spectral norm in D) learns the blobs' full spread
    gan = GANAnomalyDetector(objective="gan", epochs=30, random_state=0).fit(X_train)
    ratio = gan.generate(500, random_state=0).std(0).mean() / X_train.std(0).mean()
    assert ratio > 0.5
    assert gan.history_["g_std_ratio"][-1] > 0.5
    # "auto" is the minimax GAN for tables too
    assert fitted_blobs.objective_ == "gan"


# ---- integration with scikit-learn -------------------------------------------------------

def test_pipeline_clone_and_pickle(blobs):
    X_train, X_test, y_test = blobs
    pipe = make_pipeline(StandardScaler(), GANAnomalyDetector(epochs=10, random_state=0)).fit(X_train)
    s = pipe.score_samples(X_test)
    assert roc_auc_score(y_test, -s) >= 0.9
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pipe)).score_samples(X_test), s)
    cloned = clone(pipe)
    assert not hasattr(cloned[-1], "offset_")
    np.testing.assert_array_equal(cloned.fit(X_train).score_samples(X_test), s)


def test_dataframe_feature_names_and_index(blobs):
    X_train, X_test, _ = blobs
    cols = [f"f{i}" for i in range(5)]
    det = GANAnomalyDetector(epochs=3, random_state=0).fit(pd.DataFrame(X_train, columns=cols))
    np.testing.assert_array_equal(det.feature_names_in_, cols)
    df = pd.DataFrame(X_test, columns=cols, index=np.arange(len(X_test)) + 1000)
    assert list(det.score_components(df).index) == list(df.index)
    with pytest.raises(ValueError, match="feature names"):
        det.score_samples(pd.DataFrame(X_test, columns=[f"g{i}" for i in range(5)]))


# ---- history, callbacks, progress ----------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_begin(self, estimator, info):
        self.events.append(("begin", info))

    def on_epoch_end(self, estimator, logs):
        self.events.append(("epoch", dict(logs)))

    def on_fit_end(self, estimator):
        self.events.append(("end", hasattr(estimator, "offset_")))


def test_callbacks_see_every_epoch_and_history(blobs):
    X_train, _, _ = blobs
    rec = Recorder()
    det = GANAnomalyDetector(epochs=4, encoder_epochs=3, callbacks=[rec], random_state=0).fit(X_train)
    kinds = [e[0] for e in rec.events]
    assert kinds == ["begin"] + ["epoch"] * 7 + ["end"]
    assert rec.events[0][1]["epochs"] == 4 and rec.events[-1][1] is True
    phases = [e[1]["phase"] for e in rec.events[1:-1]]
    assert phases == ["gan"] * 4 + ["encoder"] * 3
    assert len(det.history_["d_loss"]) == 4 and len(det.history_["e_loss"]) == 3
    assert det.history_["d_loss"] == [e[1]["d_loss"] for e in rec.events[1:5]]
    assert all(np.isfinite(v) for v in det.history_["g_loss"])


def test_bad_callback_type_is_rejected(blobs):
    with pytest.raises(TypeError, match="callbacks"):
        GANAnomalyDetector(epochs=1, callbacks=[object()]).fit(blobs[0])


def test_verbose_progress_bar(blobs, capsys):
    det = GANAnomalyDetector(epochs=20, encoder_epochs=10, verbose=1, random_state=0).fit(blobs[0][:100])
    # stderr is not a terminal under pytest: plain progress lines there (a bar on terminals),
    # about one per tenth of the epochs, and nothing on stdout
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.startswith("gananomaly fit:")]
    assert 5 <= len(lines) <= 12 and lines[-1].startswith("gananomaly fit: 30/30 epochs (GAN and encoder)"), lines
    # each line carries the losses of the epoch it counts (it showed the epoch before's)
    d, g = det.history_["d_loss"][2], det.history_["g_loss"][2]
    assert lines[0] == f"gananomaly fit: 3/30 epochs (GAN and encoder) d={d:.3f} g={g:.3f}"
    assert lines[-1].endswith(f"e={det.history_['e_loss'][-1]:.4f}")


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "X,match",
    [
        (np.array([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]]), "infinity"),
        (np.empty((0, 3)), "0 sample"),
        (np.array([[1.0, 2.0]]), "minimum of 2"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), r"non-numeric values: column 0: row indices 0, 1; "
                                                           r"column 1: row indices 0, 1 \(e\.g\. 'a';.*\).*tabular"),
        (np.array([1.0, 2.0, 3.0]), "2D array"),
    ],
)
def test_bad_fit_input(X, match):
    """Bad table input is named (columns, rows) and points to the tabular pipeline."""
    with pytest.raises(ValueError, match=match):
        GANAnomalyDetector(epochs=1).fit(X)


def test_bad_score_input(fitted_blobs):
    with pytest.raises(ValueError, match="5 features"):
        fitted_blobs.score_samples(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        fitted_blobs.score_samples(np.full((2, 5), np.nan))
    with pytest.raises(ValueError, match="0 sample"):
        fitted_blobs.score_samples(np.empty((0, 5)))
    # values far beyond the training range are anomalies whatever their size: finite, outlying scores
    huge = np.zeros((3, 5))
    huge[0, 0], huge[1, 1] = 1e20, 1e300
    scores = fitted_blobs.score_samples(huge)
    assert np.isfinite(scores).all() and list(fitted_blobs.predict(huge)[:2]) == [-1, -1]
    assert scores[0] < fitted_blobs.offset_ - 1e3 and scores[1] < fitted_blobs.offset_ - 1e3


def test_training_data_that_would_erase_or_fake_a_column_is_named():
    """Scaling cannot overflow (a 1e300 cell used to make the scale inf and erase its column:
    a 1000-sigma value there then scored as normal), the constant-column test is relative
    (data in units of 1e-13 is not constant), and bad training data gets a warning naming
    the columns."""
    import warnings

    import pandas as pd

    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(300, 4), columns=["a", "b", "c", "d"])
    bad = X.copy()
    bad.iloc[5, 2] = 1e300
    with pytest.warns(UserWarning, match=r"scale is set by a few extreme values.*'c'"):
        det = GANAnomalyDetector(epochs=3, random_state=0).fit(bad)
    assert np.isfinite(det.input_scale_).all() and np.isfinite(det.score_samples(X)).all()
    # tiny units: the same model as in unit units, up to rounding
    tiny = GANAnomalyDetector(epochs=3, random_state=0).fit(X * 1e-13)
    unit = GANAnomalyDetector(epochs=3, random_state=0).fit(X)
    np.testing.assert_allclose(tiny.input_scale_ * 1e13, unit.input_scale_, rtol=1e-9)
    assert np.corrcoef(tiny.score_samples(X * 1e-13), unit.score_samples(X))[0, 1] > 0.999
    # a small spread on a large offset is a column, not a constant (an 8-sigma value in it was invisible)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        shifted = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0,
                                     validation_fraction=0).fit(X.assign(b=1e8 + 0.01 * X["b"]))
    assert shifted.input_scale_[1] == pytest.approx(0.01 * X["b"].std(ddof=0), rel=1e-6)
    # a constant column, and all-identical rows
    const = X.assign(b=7.0)
    with pytest.warns(UserWarning, match=r"constant in the training data.*'b'"):
        GANAnomalyDetector(epochs=1, random_state=0).fit(const)
    with pytest.warns(UserWarning, match="every training row is identical"):
        GANAnomalyDetector(epochs=1, random_state=0).fit(np.ones((50, 3)))


def test_diverged_training_is_reported():
    """A learning rate that blows the generator up (its samples spread ~1e6-1e12 times the
    data's) or lets the discriminator win outright is named as divergence, not only as low fidelity."""
    from gananomaly.training import GeneratorCollapseWarning

    X = np.random.RandomState(0).randn(300, 5)
    with pytest.warns(GeneratorCollapseWarning, match="training diverged"):
        GANAnomalyDetector(objective="gan", learning_rate=10.0, epochs=10, random_state=0).fit(X)


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(objective="lsgan"), "objective"),
        (dict(encoder="vae"), "encoder"),
        (dict(contamination=0.7), "contamination"),
        (dict(contamination=0.0), "contamination"),
        (dict(epochs=0), "epochs"),
        (dict(weight=1.5), "weight"),
        (dict(component="sigmoid"), "component"),
        (dict(device="tpu"), "device"),
        (dict(hidden_dims=(16, -1)), "hidden_dims"),
        (dict(precision="fp8"), "precision"),
        (dict(generator_learning_rate=0.0), "generator_learning_rate"),
        # rates that do not fit in float32 were accepted and failed inside torch's optimiser
        (dict(learning_rate=1e300), r"'learning_rate' parameter .* range \(0.0, 10000000000.0\]"),
        (dict(encoder_learning_rate=1e39), "encoder_learning_rate"),
        (dict(refine_lr=1e39, n_refine_steps=1), "refine_lr"),
        (dict(betas=(0.5,)), "betas"),
        (dict(betas=(0.5, 1.0)), "betas"),
        (dict(betas="adam"), "betas"),
        (dict(max_time=True), "'max_time' parameter .* must be a number, not a bool"),
        (dict(weight=True), "'weight' parameter .* must be a number, not a bool"),
    ],
)
def test_bad_parameters(blobs, params, match):
    with pytest.raises(ValueError, match=match):
        GANAnomalyDetector(**{"epochs": 1, **params}).fit(blobs[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_cuda(blobs):
    with pytest.raises(ValueError, match="CUDA is not available"):
        GANAnomalyDetector(epochs=1, device="cuda").fit(blobs[0])


def test_device_auto_resolves_to_cpu_here(fitted_blobs):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert fitted_blobs.device_.type == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_bf16_keeps_auroc(cancer):
    X_train, X_test, y_test = cancer
    gpu = GANAnomalyDetector(device="cuda", random_state=0).fit(X_train)
    assert gpu.device_.type == "cuda"
    assert gpu.score_config_.amp_dtype == torch.bfloat16
    auc_bf16 = roc_auc_score(y_test, -gpu.score_samples(X_test))
    fp32 = GANAnomalyDetector(device="cuda", precision="fp32", random_state=0).fit(X_train)
    auc_fp32 = roc_auc_score(y_test, -fp32.score_samples(X_test))
    assert auc_bf16 >= 0.9 and auc_fp32 >= 0.9
    assert abs(auc_bf16 - auc_fp32) <= 0.03
    restored = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(restored.score_samples(X_test), gpu.score_samples(X_test), atol=1e-6)


def test_anomaly_map_of_a_table_points_at_the_broken_feature(blobs, fitted_blobs):
    """For tables the map is one value per feature: shifting one feature of normal rows
    makes that feature's residual the largest in most of them."""
    _, X_test, y_test = blobs
    normal = X_test[y_test == 0][:100]
    hits = []
    for j in range(normal.shape[1]):
        broken = normal.copy()
        broken[:, j] += 4.0
        maps = fitted_blobs.anomaly_map(broken, component="reconstruction")
        assert maps.shape == broken.shape
        hits.append(np.mean(maps.argmax(1) == j))
    print("hits", hits)
    assert np.mean(hits) >= 0.7, hits


def test_a_refit_that_raises_leaves_the_previous_model(blobs, fitted_blobs):
    """A failed refit (here: data the scaler accepts but the fit rejects later) used to leave
    the new scaler and architecture beside the old networks; now nothing changes."""
    import copy

    X_train, X_test, _ = blobs
    det = copy.deepcopy(fitted_blobs)
    before = det.score_samples(X_test)
    state = {k: v for k, v in vars(det).items() if k.endswith("_")}
    with pytest.raises(ValueError):
        det.fit(X_train[:, :3] * 100.0, context=np.zeros(len(X_train) + 1))  # context of the wrong length
    assert {k for k in vars(det) if k.endswith("_")} == set(state)
    assert det.n_features_in_ == 5 and det.input_scale_ is state["input_scale_"]
    np.testing.assert_array_equal(det.score_samples(X_test), before)
    fresh = GANAnomalyDetector(epochs=1)
    with pytest.raises(ValueError):
        fresh.fit(X_train, context=np.zeros(3))
    assert not [k for k in vars(fresh) if k.endswith("_")]
    with pytest.raises(TypeError):
        fitted_blobs.score_samples(X_test, None)  # context is keyword-only, as in fit


def test_bad_table_input_names_columns_and_rows(fitted_blobs):
    import pandas as pd

    X = pd.DataFrame(np.random.RandomState(0).randn(40, 3), columns=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"missing \(NaN\) values: column 'b': row index 7;.*tabular pipeline"):
        GANAnomalyDetector(epochs=1).fit(X.assign(b=X["b"].where(X.index != 7)))
    with pytest.raises(ValueError, match=r"non-numeric columns 'region'.*encodes categories"):
        GANAnomalyDetector(epochs=1).fit(X.assign(region="south"))
    with pytest.raises(ValueError, match=r"non-numeric columns 'when' \(datetime"):
        GANAnomalyDetector(epochs=1).fit(X.assign(when=pd.Timestamp("2026-01-01")))
    with pytest.raises(ValueError, match=r"X has duplicate column names \['b'\]"):
        GANAnomalyDetector(epochs=1).fit(pd.concat([X, X[["b"]]], axis=1))
    scoring = np.zeros((4, 5))
    scoring[2, 4] = np.nan
    with pytest.raises(ValueError, match="column 4: row index 2"):
        fitted_blobs.score_samples(scoring)
    # one bad cell in text or list input: its column and row (every column was blamed, no row)
    rows = [[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, "n/a", 4.0, 5.0]]
    with pytest.raises(ValueError, match=r"non-numeric values: column 2: row index 1 \(e\.g\. 'n/a';"):
        fitted_blobs.score_samples(rows)
    as_text = np.array([[str(v) for v in r] for r in rows])
    with pytest.raises(ValueError, match=r"non-numeric values: column 2: row index 1 \(e\.g\. 'n/a';"):
        fitted_blobs.score_samples(as_text)
    # numbers held in object columns are numbers (as IsolationForest takes them)
    np.testing.assert_array_equal(fitted_blobs.score_samples(pd.DataFrame(scoring[:2]).astype(object)),
                                  fitted_blobs.score_samples(scoring[:2]))
    # dates as an array were read as nanosecond counts
    with pytest.raises(ValueError, match=r"X holds dates or durations \(datetime64\[ns\]\)"):
        fitted_blobs.score_samples(np.zeros((2, 5), dtype="M8[ns]"))


def test_thread_policy_for_training():
    """Table training runs on one thread unless the count was chosen explicitly; the
    caller's thread count is restored; conv training keeps the current count."""
    from gananomaly.defaults import training_threads

    assert training_threads(False, 2, 2, {}) == 1
    assert training_threads(True, 2, 2, {}) == 2
    assert training_threads(False, 3, 2, {}) == 3  # torch.set_num_threads was called
    assert training_threads(False, 2, 2, {"OMP_NUM_THREADS": "2"}) == 2
    assert training_threads(False, 2, 2, {"GANANOMALY_NUM_THREADS": "4", "OMP_NUM_THREADS": "2"}) == 4
    assert training_threads(False, 2, 2, {"GANANOMALY_NUM_THREADS": "zero"}) == 1

    seen = []

    class Spy(Callback):
        def on_epoch_end(self, estimator, logs):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    GANAnomalyDetector(epochs=2, callbacks=(Spy(),), random_state=0).fit(np.random.RandomState(0).randn(80, 3))
    assert torch.get_num_threads() == before
    import gananomaly.estimator as est

    assert set(seen) == ({1} if before == est._DEFAULT_THREADS and not any(
        os.environ.get(k) for k in ("GANANOMALY_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")) else {before})


@pytest.mark.parametrize(
    "params,expected",
    [
        (dict(), (2e-4, 2e-4, (0.5, 0.999))),
        (dict(learning_rate=1e-3), (1e-3, 1e-3, (0.5, 0.999))),
        # the two time-scale option of benchmarks/NOTES.md
        (dict(generator_learning_rate=1e-4, betas=[0.0, 0.9]), (2e-4, 1e-4, (0.0, 0.9))),
        (dict(objective="wgan-gp"), (1e-4, 1e-4, (0.5, 0.9))),
        (dict(objective="wgan-gp", betas=(0.0, 0.99)), (1e-4, 1e-4, (0.0, 0.99))),
    ],
)
@pytest.mark.filterwarnings("ignore:the generator has not learned")
def test_optimisers_get_the_resolved_learning_rates_and_betas(blobs, params, expected, monkeypatch):
    from gananomaly import training

    made = []
    original = training.Trainer.__init__

    def spy_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(training.Trainer, "__init__", spy_init)
    GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0, **params).fit(blobs[0][:200])
    (trainer,) = made
    d_group, g_group = trainer.opt_d.param_groups[0], trainer.opt_g.param_groups[0]
    assert (d_group["lr"], g_group["lr"]) == pytest.approx(expected[:2])
    assert tuple(d_group["betas"]) == tuple(g_group["betas"]) == pytest.approx(expected[2])


def test_generate_refuses_a_bool_and_a_draw_too_large_before_allocating(fitted_blobs):
    with pytest.raises(ValueError, match="n_samples must be a positive int, got True"):
        fitted_blobs.generate(True)  # was one sample
    with pytest.raises(ValueError, match=r"n_samples=1000000000000 would hold .* values .*several calls"):
        fitted_blobs.generate(10**12)  # was torch's allocation failure
    big = fitted_blobs.generate(70_000, random_state=3)  # more than one block of the generator
    np.testing.assert_array_equal(big, fitted_blobs.generate(70_000, random_state=3))
    assert big.shape == (70_000, fitted_blobs.n_features_in_) and np.isfinite(big).all()
