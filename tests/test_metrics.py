"""Pixel-level metrics of anomaly maps: pixel AUROC and PRO (per-region overlap)."""

import numpy as np
import pytest

from gananomaly.metrics import pixel_auroc, pro_score


def masks_two_regions():
    masks = np.zeros((20, 16, 16), dtype=bool)
    masks[:10, 4:8, 4:8] = True
    masks[:5, 10:12, 10:14] = True
    return masks


def test_perfect_random_and_inverted_maps():
    masks = masks_two_regions()
    perfect = masks.astype(float)
    assert pixel_auroc(masks, perfect) == 1.0 and pro_score(masks, perfect) == pytest.approx(1.0)
    rand = np.random.RandomState(0).rand(*masks.shape)
    assert abs(pixel_auroc(masks, rand) - 0.5) < 0.05
    assert abs(pro_score(masks, rand) - 0.15) < 0.03  # a random map's PRO curve is the diagonal
    inverted = 1.0 - perfect + 0.01 * np.random.RandomState(1).rand(*masks.shape)
    assert pixel_auroc(masks, inverted) < 0.01 and pro_score(masks, inverted) < 0.01


def test_pro_weighs_every_region_equally_where_pixel_auroc_weighs_pixels():
    """A large missed region and a small found one: half the regions are found (PRO about
    0.5), but most defect pixels are not (pixel AUROC near 0)."""
    rng = np.random.RandomState(0)
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 2:10, 2:10] = True  # 64 pixels, missed
    masks[1, 5:7, 5:7] = True  # 4 pixels, found
    maps = 0.5 * rng.rand(2, 16, 16) + 0.1
    maps[0, 2:10, 2:10] = 0.0
    maps[1, 5:7, 5:7] = 1.0
    assert pro_score(masks, maps) == pytest.approx(0.5, abs=0.01)
    assert pixel_auroc(masks, maps) < 0.1


def test_bad_input_is_named():
    masks = masks_two_regions()
    with pytest.raises(ValueError, match="shape"):
        pro_score(masks, np.zeros((20, 16, 15)))
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(masks, np.full(masks.shape, np.nan))
    with pytest.raises(ValueError, match="some anomalous"):
        pro_score(np.zeros_like(masks), np.zeros(masks.shape))
    with pytest.raises(ValueError, match="max_fpr"):
        pro_score(masks, masks.astype(float), max_fpr=0.0)


def test_evaluation_scores_the_rows_once_and_agrees_with_the_separate_calls():
    """evaluate_detector reads one score_table pass (the networks run once over the rows),
    and its figures equal those of score_components and predict computed separately."""
    from gananomaly import GANAnomalyDetector
    from gananomaly.metrics import evaluate_detector, evaluate_scores

    rng = np.random.RandomState(0)
    det = GANAnomalyDetector(epochs=2, encoder_epochs=1, random_state=0).fit(rng.randn(200, 4))
    X = np.vstack([rng.randn(40, 4), 5 + rng.randn(10, 4)])
    y = np.r_[np.zeros(40, int), np.ones(10, int)]
    calls = []
    real = det.score_components

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    det.score_components = counting
    table = evaluate_detector(det, X, y)
    assert len(calls) == 1
    del det.score_components
    comps = det.score_components(X)
    expected = evaluate_scores(y, comps["combined"].to_numpy(), det.predict(X) == -1)
    for key, value in expected.items():
        assert table.loc["combined", key] == pytest.approx(value, abs=1e-12)
    assert list(table.index) == list(comps.columns)
