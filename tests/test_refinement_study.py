"""Refinement can be studied on a fitted detector without touching its fitted state."""

import numpy as np
import pytest

from gananomaly import GANAnomalyDetector

X = np.random.RandomState(0).normal(size=(128, 4))


def test_raw_components_with_other_refinement_match_a_fit_with_it():
    plain = GANAnomalyDetector(epochs=2, encoder_epochs=1, random_state=0).fit(X)
    refined = GANAnomalyDetector(epochs=2, encoder_epochs=1, n_refine_steps=5, random_state=0).fit(X)
    before = plain.score_config_.n_refine_steps
    study = plain.score_components(X[:20], raw=True, n_refine_steps=5)
    fitted = refined.score_components(X[:20], raw=True)
    for name in ("reconstruction", "discriminator"):
        np.testing.assert_allclose(study[name], fitted[name], rtol=1e-5)
    unrefined = plain.score_components(X[:20], raw=True)
    assert not np.allclose(study["reconstruction"], unrefined["reconstruction"])
    assert plain.score_config_.n_refine_steps == before == 0  # the fitted state is untouched
    with pytest.raises(ValueError, match="needs raw=True"):
        plain.score_components(X[:5], n_refine_steps=5)
    with pytest.raises(ValueError, match="non-negative int"):
        plain.score_components(X[:5], raw=True, n_refine_steps=-1)


def test_gradient_work_runs_inside_a_callers_inference_mode():
    """Serving code often scores under torch.inference_mode(): the latent search, the
    explanations and the maps need gradients and must give the same bits there."""
    import torch

    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, n_refine_steps=2, random_state=0).fit(X)
    scores, why, maps = det.score_samples(X[:5]), det.explain(X[:5]), det.anomaly_map(X[:5])
    with torch.inference_mode():
        np.testing.assert_array_equal(det.score_samples(X[:5]), scores)
        assert det.explain(X[:5]).equals(why)
        np.testing.assert_array_equal(det.anomaly_map(X[:5]), maps)
