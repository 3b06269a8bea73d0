import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gananomaly.parzen import evaluate_generator, parzen_log_density, parzen_log_likelihood


def test_generator_equal_to_the_data_distribution_recovers_true_likelihood():
    """When the 'generator' is the data distribution itself, the Parzen estimate approaches
    the true mean log-likelihood: -d/2 * log(2*pi*e) for a standard normal."""
    rng = np.random.RandomState(0)
    d = 2
    samples, valid, test = rng.randn(20000, d), rng.randn(500, d), rng.randn(2000, d)
    res = parzen_log_likelihood(samples, test, valid)
    exact = multivariate_normal(np.zeros(d), np.eye(d)).logpdf(test).mean()
    assert abs(res.mean_log_likelihood - exact) < 0.05
    assert abs(exact - (-d / 2 * math.log(2 * math.pi * math.e))) < 0.1
    # a wrong generator (shifted) scores clearly lower
    worse = parzen_log_likelihood(samples + 3.0, test, valid)
    assert worse.mean_log_likelihood < res.mean_log_likelihood - 1.0


def test_density_matches_direct_formula():
    rng = np.random.RandomState(1)
    S, X, h = rng.randn(50, 3), rng.randn(7, 3), 0.7
    direct = [math.log(np.mean([multivariate_normal(s, h**2 * np.eye(3)).pdf(x) for s in S])) for x in X]
    np.testing.assert_allclose(parzen_log_density(S, X, h, batch_size=3), direct, rtol=1e-10)


def test_bad_input():
    with pytest.raises(ValueError, match="features"):
        parzen_log_density(np.zeros((3, 2)), np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        parzen_log_density(np.zeros((3, 2)), np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        parzen_log_density(np.full((3, 2), np.nan), np.zeros((3, 2)), 1.0)


def test_trained_generator_beats_a_broken_one(blobs):
    from gananomaly import GANAnomalyDetector

    X_train, X_test, _ = blobs
    normal_test = X_test[:200]
    det = GANAnomalyDetector(objective="gan", epochs=30, random_state=0).fit(X_train)
    res = evaluate_generator(det, X_train[:300], normal_test, n_samples=3000)
    noise = np.random.RandomState(0).uniform(-8, 8, size=(3000, 5))
    broken = parzen_log_likelihood(noise, normal_test, X_train[:300])
    assert res.mean_log_likelihood > broken.mean_log_likelihood + 1.0
