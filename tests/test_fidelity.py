"""Generator fidelity: the measures themselves, and that the default detector's generator
learns multi-modal and correlated data (floors a collapsed or narrow generator fails)."""

import warnings

import numpy as np
import pytest
import torch

from gananomaly import GANAnomalyDetector
from gananomaly.fidelity import (
    GeneratorFidelityWarning,
    expected_coverage,
    manifold_metrics,
    mode_coverage,
    parzen_gap,
)

RING_CENTERS = np.c_[2 * np.cos(2 * np.pi * np.arange(8) / 8), 2 * np.sin(2 * np.pi * np.arange(8) / 8)]


def ring(n, seed):
    """8 Gaussian modes (sd 0.2) on a circle of radius 2."""
    rng = np.random.RandomState(seed)
    return RING_CENTERS[rng.randint(8, size=n)] + 0.2 * rng.randn(n, 2)


def correlated(n, seed, d=6):
    rng = np.random.RandomState(123)
    a = rng.randn(d, d) / np.sqrt(d)
    cov = a @ a.T + 0.05 * np.eye(d)
    return np.random.RandomState(seed).multivariate_normal(np.zeros(d), cov, size=n)


# ---- the measures, on samples whose answer is known -----------------------------------------

def test_real_samples_score_as_a_perfect_generator():
    m = manifold_metrics(ring(1000, 0), ring(1000, 1))
    assert m["precision"] > 0.9 and m["recall"] > 0.9
    assert 0.8 < m["density"] < 1.2
    assert m["coverage"] > expected_coverage() - 0.08
    assert m["fidelity"] > 0.85


def test_collapsed_and_partial_generators_score_low():
    real = ring(1000, 0)
    blob = 0.1 * np.random.RandomState(1).randn(1000, 2)  # the old default's centre blob
    m = manifold_metrics(real, blob)
    assert m["precision"] < 0.05 and m["coverage"] < 0.05 and m["fidelity"] < 0.1
    half = ring(4000, 2)
    half = half[np.arctan2(half[:, 1], half[:, 0]) > -0.4][:1000]  # about 4 of 8 modes
    m = manifold_metrics(real, half)
    assert m["precision"] > 0.9  # realistic samples...
    assert 0.35 < m["coverage"] < 0.65  # ...of half of the data
    noise = np.random.RandomState(3).uniform(-6, 6, size=(1000, 2))
    m = manifold_metrics(real, noise)
    assert m["density"] < 0.3 and m["fidelity"] < 0.5  # spread everywhere: low density


def test_data_with_repeated_rows_is_measured_not_mistaken_for_collapse():
    """Binary columns: 16 distinct rows, each repeated about 60 times. A k-NN ball of radius 0
    around every real row made a generator that reproduces the data (up to a small jitter)
    score fidelity 0, like a collapsed one; a generator that repeats one row must still."""
    rng = np.random.RandomState(0)
    real = rng.randint(0, 2, size=(1000, 4)).astype(float)
    learned = rng.randint(0, 2, size=(1000, 4)) + 0.05 * rng.randn(1000, 4)
    m = manifold_metrics(real, learned)
    assert m["fidelity"] > 0.95 and 0.95 < m["density"] < 1.05 and m["coverage"] > 0.95
    two_rows = np.repeat(rng.randint(0, 2, size=(1000, 1)), 4, axis=1) + 0.05 * rng.randn(1000, 4)
    m = manifold_metrics(real, two_rows)  # 2 of the 16 values
    assert m["coverage"] < 0.2 and m["fidelity"] < 0.3
    m = manifold_metrics(real, rng.uniform(0, 1, size=(1000, 4)))  # smeared between the values
    assert m["density"] < 0.5 and m["fidelity"] < 0.5
    m = manifold_metrics(real, np.full((1000, 4), 0.5))  # one row repeated: collapsed
    assert m["fidelity"] == 0.0
    copies = np.repeat(real[:1], 1000, axis=0)
    m = manifold_metrics(real, copies)  # one of the 16 real values, repeated exactly: collapsed
    assert m["coverage"] < 0.1 and m["fidelity"] < 0.2


def test_rows_without_copies_keep_the_plain_k_nn_balls():
    from gananomaly.fidelity import _kth_radius, _real_balls

    rows = torch.as_tensor(correlated(300, 0), dtype=torch.float64)
    radius, weight = _real_balls(rows, 5)
    assert torch.equal(radius, _kth_radius(rows, 5)) and torch.equal(weight, torch.ones(300, dtype=torch.float64))
    # one value held by 8 rows: their balls reach half-way to the nearest other row and weigh 5/8
    # each, 5 balls' worth together (as many as a point of continuous data lies in)
    far = rows[0] + 3.0
    mixed = torch.cat([rows, far.repeat(8, 1), (far + 0.5)[None]])
    radius, weight = _real_balls(mixed, 5)
    assert torch.equal(radius[:300], _kth_radius(mixed, 5)[:300]) and bool((weight[:300] == 1).all())
    assert torch.allclose(radius[300:308], torch.full((8,), 0.25 * 6**0.5, dtype=torch.float64))
    assert torch.allclose(weight[300:308].sum(), torch.tensor(5.0, dtype=torch.float64))


@pytest.mark.parametrize("d", [2, 30, 300])
def test_fidelity_sees_a_narrow_generator_in_any_dimension(d):
    """In many dimensions a real row's k-NN ball holds a shrunken copy of the data, so density
    and coverage stay at 1 for a generator whose samples huddle near the centre. The reverse
    density sees it, in every dimension, while real samples keep a high fidelity."""
    rng = np.random.RandomState(d)
    real = rng.randn(600, d)
    perfect = manifold_metrics(real, rng.randn(600, d))
    assert perfect["fidelity"] > 0.85 and 0.75 < perfect["reverse_density"] < 1.3
    narrow = manifold_metrics(real, 0.6 * rng.randn(600, d))
    wide = manifold_metrics(real, 1.6 * rng.randn(600, d))
    if d == 2:  # a mild effect in the plane
        assert max(narrow["fidelity"], wide["fidelity"]) < perfect["fidelity"] - 0.05
        return
    assert narrow["coverage"] > 0.95 and narrow["density"] > 1  # blind to it...
    assert narrow["reverse_density"] < 0.1 and narrow["fidelity"] < 0.1  # ...the fidelity is not
    assert wide["fidelity"] < 0.1


def test_mode_coverage_and_parzen_gap():
    real = ring(2000, 0)
    assert mode_coverage(real, RING_CENTERS, 0.6)["modes"] == 8
    one = RING_CENTERS[[0]] + 0.2 * np.random.RandomState(1).randn(2000, 2)
    cov = mode_coverage(one, RING_CENTERS, 0.6)
    assert cov["modes"] == 1 and cov["largest_share"] > 0.98
    held = ring(1000, 5)
    assert abs(parzen_gap(ring(2000, 3), ring(2000, 4), held)["parzen_gap"]) < 0.15
    assert parzen_gap(ring(2000, 3), one, held)["parzen_gap"] < -3


def test_metrics_validate_input():
    with pytest.raises(ValueError, match="features"):
        manifold_metrics(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        manifold_metrics(np.zeros((1, 2)), np.zeros((10, 2)))
    for k in (0, -1, True, 2.0):  # k=0 gave fidelity 1.0 for any rows, k=-1 gave 3.1
        with pytest.raises(ValueError, match="k must be an int"):
            manifold_metrics(ring(20, 0), ring(20, 1), k=k)
    nan = manifold_metrics(ring(20, 0), np.full((20, 2), np.nan))
    assert all(np.isnan(v) for v in nan.values())


# ---- the default detector learns the data -------------------------------------------------

@pytest.fixture(scope="module")
def ring_fit_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = GANAnomalyDetector(random_state=0).fit(ring(2000, 0))
    return det, caught


@pytest.fixture(scope="module")
def ring_fit(ring_fit_warnings):
    return ring_fit_warnings[0]


def test_default_generator_covers_every_mode_of_the_ring(ring_fit):
    """The default used to cover 2 of 8 modes with a blob near the centre (Parzen gap about
    -20 nats); a generator that learned the ring covers all 8 and puts most samples on them."""
    samples = ring_fit.generate(4000, random_state=1)
    cov = mode_coverage(samples, RING_CENTERS, 0.6)
    assert cov["modes"] == 8, cov
    assert cov["high_quality"] > 0.75 and cov["largest_share"] < 0.25, cov
    np.testing.assert_allclose(samples.std(0), [1.43, 1.43], rtol=0.15)
    gap = parzen_gap(ring(2000, 3), samples[:2000], ring(1000, 4))["parzen_gap"]
    assert gap > -0.6, gap


def test_fidelity_is_recorded_and_the_best_generator_kept(ring_fit):
    h, f = ring_fit.history_, ring_fit.fidelity_
    assert len(h["fidelity"]) == len(h["fidelity_epoch"]) >= 3
    for key in ("precision", "recall", "density", "coverage"):
        assert len(h[key]) == len(h["fidelity"])
    assert f["held_out"] == 1.0 and f["n_rows"] == 200
    # the generator kept is the best measured one (same probe noise: the same value)
    assert f["fidelity"] == pytest.approx(max(h["fidelity"]), abs=1e-12)
    assert h["fidelity_epoch"][int(np.argmax(h["fidelity"]))] == f["best_epoch"]
    # training improved on its start: the first measurement is far below the best
    assert h["fidelity"][0] < f["fidelity"] - 0.2
    assert f["fidelity"] > 0.7 and f["coverage"] > 0.7 and f["reverse_density"] > 0.5


def test_generator_fidelity_on_rows_the_fit_never_saw(ring_fit):
    """The same measures on fresh normal rows (what the benchmarks report): the default
    generator reproduces the ring, modes at their width (reverse density), and an untrained
    generator does not; one random_state, one answer."""
    fresh = ring(1000, 9)
    f = ring_fit.generator_fidelity(fresh, random_state=0)
    assert f == ring_fit.generator_fidelity(fresh, random_state=0)
    assert f["fidelity"] > 0.6 and f["reverse_density"] > 0.5 and f["coverage"] > 0.6, f
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        untrained = GANAnomalyDetector(epochs=1, learning_rate=1e-6, random_state=0).fit(ring(600, 0))
    assert untrained.generator_fidelity(fresh, random_state=0)["fidelity"] < 0.2
    sub = ring_fit.generator_fidelity(ring(5000, 9), random_state=0, max_rows=300)
    assert 0.4 < sub["fidelity"] <= 1
    with pytest.raises(ValueError, match="features"):
        ring_fit.generator_fidelity(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        ring_fit.generator_fidelity(fresh[:1])
    with pytest.raises(ValueError, match="max_rows"):
        ring_fit.generator_fidelity(fresh, max_rows=1)


def test_correlated_gaussian_parzen_gap_is_small():
    """The old default's generator was 23.6 nats short of real samples on this kind of data."""
    det = GANAnomalyDetector(random_state=0).fit(correlated(3000, 0))
    gap = parzen_gap(correlated(2000, 1), det.generate(2000, random_state=2), correlated(1000, 2))["parzen_gap"]
    assert gap > -1.5, gap
    assert det.fidelity_["fidelity"] > 0.8


def test_an_untrained_generator_is_warned_about():
    """The advice follows how the training ended: it said "train longer (epochs='auto')" also
    when epochs='auto' had already run to its step budget, or when max_time had stopped it."""
    X = ring(600, 0)
    with pytest.warns(GeneratorFidelityWarning, match=r"has not learned the normal data.*The training used all "
                                                      r"its 1 epochs \(\d+ discriminator steps"):
        det = GANAnomalyDetector(epochs=1, learning_rate=1e-6, random_state=0).fit(X)
    assert det.fidelity_["fidelity"] < 0.5
    with pytest.warns(GeneratorFidelityWarning, match=r"max_time \(0\.01 s\) ended the training after 1 of 50 "
                                                      r"epochs: allow more time") as record:
        GANAnomalyDetector(epochs=50, max_time=0.01, learning_rate=1e-6, random_state=0).fit(X)
    # the minimax objective is what these fits used: suggested only to a WGAN-GP fit
    assert not any("objective='gan'" in str(w.message) for w in record)
    with pytest.warns(GeneratorFidelityWarning, match=r"pass a larger epochs=, or use objective='gan' or a lower"):
        GANAnomalyDetector(epochs=1, objective="wgan-gp", learning_rate=1e-6, random_state=0).fit(X)


def test_a_trained_generator_is_not_warned_about(ring_fit_warnings):
    assert not [w for w in ring_fit_warnings[1] if issubclass(w.category, GeneratorFidelityWarning)]


def test_validation_fraction_zero_and_small_data():
    X = ring(120, 0)
    det = GANAnomalyDetector(epochs=3, validation_fraction=0.0, random_state=0).fit(X)
    assert det.fidelity_ == {} and "fidelity" not in det.history_
    # 12 held-out rows are too few: fidelity is measured on the training rows instead
    det = GANAnomalyDetector(epochs=3, random_state=0).fit(X)
    assert det.fidelity_["held_out"] == 0.0 and det.fidelity_["n_rows"] == 120


def test_max_time_ends_the_gan_phase():
    det = GANAnomalyDetector(max_time=0.5, random_state=0).fit(ring(2000, 0))
    assert 1 <= det.n_epochs_ < 100


@pytest.mark.filterwarnings("ignore::UserWarning")  # three epochs: not meant to be faithful
def test_the_parzen_gap_of_a_small_table_never_scores_rows_inside_their_own_window():
    """A table too small to hold rows out measures fidelity on its training rows; the real Parzen
    window was those same rows, so it scored each row with itself in the window: a log-likelihood
    of +3.5 nats for standard normal data whose true value is -5.7 (gaps of -15 instead of -7)."""
    true_ll = -0.5 * 4 * np.log(2 * np.pi * np.e)  # mean log-density of N(0, I_4)
    for seed in range(2):
        X = np.random.RandomState(seed).randn(80, 4)
        fid = GANAnomalyDetector(epochs=3, encoder_epochs=1, random_state=0).fit(X).fidelity_
        assert fid["held_out"] == 0.0 and fid["n_rows"] == 80
        # a window on 40 real rows scoring the 40 others: a little below the truth, never above
        assert true_ll - 1.5 < fid["parzen_ll_real"] < true_ll + 0.25
        assert fid["parzen_gap"] == pytest.approx(fid["parzen_ll"] - fid["parzen_ll_real"])
