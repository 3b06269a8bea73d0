"""Detection quality of default-settings fits on data where the answer is known (each test
fits the default detector on several seeds: the suite's longest tests, in a module of their
own so that the test processes share them out; see conftest.HEAVY_MODULES)."""

import numpy as np
from sklearn.metrics import roc_auc_score

from gananomaly import GANAnomalyDetector


def test_breast_cancer_defaults_quality_and_seed_stability(cancer):
    X_train, X_test, y_test = cancer
    aurocs = []
    for seed in range(3):
        det = GANAnomalyDetector(random_state=seed).fit(X_train)
        aurocs.append(roc_auc_score(y_test, -det.score_samples(X_test)))
    assert min(aurocs) >= 0.90, aurocs
    assert np.std(aurocs) <= 0.03, aurocs



def test_latent_and_knn_terms_improve_iris_over_the_two_term_score():
    """Iris (setosa + versicolor normal, virginica anomalies): virginica continues the
    versicolor cloud, so its rows are close to the generator's manifold and the residuals
    alone rank them poorly; the code's distance and the k-NN density in D's feature space
    see them. Both scores come from the same fits."""
    from benchmarks.datasets import iris

    combined, two_term = [], []
    for seed in range(3):
        split = iris(seed)
        det = GANAnomalyDetector(random_state=seed).fit(split.X_train)
        comps = det.score_components(split.X_test)
        combined.append(roc_auc_score(split.y_test, comps["combined"]))
        two_term.append(roc_auc_score(split.y_test, 0.9 * comps["reconstruction"] + 0.1 * comps["discriminator"]))
    print("iris combined", combined, "two-term", two_term)
    assert np.mean(combined) >= 0.93, combined
    # the gain varies with the split: over seeds 0-4 of this split it is -0.007 to +0.043 per
    # seed (+0.013 on average; benchmarks/NOTES.md), so three seeds hold it to +0.01
    assert np.mean(combined) >= np.mean(two_term) + 0.01, (combined, two_term)
    X_test = split.X_test
    # latent_weight=0 and knn_weight=0 give AnoGAN's two-term score from the same components
    plain = det.set_params(latent_weight=0.0, knn_weight=0.0).score_components(X_test)["combined"]
    np.testing.assert_allclose(plain, 0.9 * comps["reconstruction"] + 0.1 * comps["discriminator"], atol=1e-12)
