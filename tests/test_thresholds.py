"""Thresholds after the fit: offset_ follows the parameters, set_threshold, thresholds from labels."""

import pickle

import numpy as np
import pytest
from sklearn.metrics import f1_score

from gananomaly import GANAnomalyDetector
from gananomaly.metrics import threshold_from_labels
from gananomaly.model_format import with_record_digest


@pytest.fixture(scope="module")
def fitted():
    X = np.random.RandomState(0).randn(400, 4)
    return X, GANAnomalyDetector(epochs=4, random_state=0).fit(X)


def _flagged(det, X):
    return float(np.mean(det.predict(X) == -1))


def test_threshold_follows_parameters_set_after_the_fit(fitted):
    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    assert det.threshold_ is None and det.training_components_.shape == (400, 4)
    np.testing.assert_allclose(det.training_scores(), det.score_samples(X), rtol=1e-9, atol=1e-9)
    auto = det.offset_
    det.set_params(contamination=0.1)
    assert det.offset_ != auto and _flagged(det, X) == pytest.approx(0.1, abs=0.003)
    before = det.score_samples(X)
    det.set_params(weight=0.6)  # scores move; the threshold moves with them
    assert not np.allclose(det.score_samples(X), before)
    assert _flagged(det, X) == pytest.approx(0.1, abs=0.003)
    det.set_params(component="reconstruction")
    assert _flagged(det, X) == pytest.approx(0.1, abs=0.003)


@pytest.mark.parametrize("key, value", [("contamination", 0.9), ("contamination", -1), ("contamination", "x"),
                                        ("weight", float("nan")), ("component", "nope"), ("knn_weight", -1.0)])
def test_a_bad_value_set_after_the_fit_is_refused_and_the_detector_unchanged(fitted, key, value):
    """The scores follow these parameters at once, so no fit checks them: 0.9 flagged 90% of
    the rows, weight=nan made every score NaN, the others failed inside numpy."""
    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    before, params = det.score_samples(X), det.get_params()
    with pytest.raises(ValueError, match=rf"The '{key}' parameter of GANAnomalyDetector must be"):
        det.set_params(**{key: value})
    assert det.get_params() == params
    np.testing.assert_array_equal(det.score_samples(X), before)


def test_a_call_with_an_unknown_name_sets_nothing(fitted):
    """set_params(component="knn", wieght_typo=0.5) set component, then raised, and skipped
    releasing the pinned threshold: a combined-scale threshold on knn scores flagged 0%."""
    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    det.set_threshold(score=float(np.percentile(det.score_samples(X), 5)))
    params, threshold = det.get_params(), dict(det.threshold_)
    with pytest.raises(ValueError, match=r"invalid parameter\(s\) \['wieght_typo'\] for GANAnomalyDetector"):
        det.set_params(component="knn", wieght_typo=0.5)
    assert det.get_params() == params and det.threshold_ == threshold
    assert _flagged(det, X) == pytest.approx(0.05, abs=0.003)


@pytest.mark.parametrize("key, value", [("n_refine_steps", 5), ("refine_lr", 0.5), ("kappa", 5.0)])
def test_a_fit_time_scoring_setting_changed_after_the_fit_is_warned_about(fitted, key, value):
    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    before = det.score_samples(X)
    det.set_params(**{key: value})
    with pytest.warns(UserWarning, match=rf"{key}={value!r} \(fitted with .*\) set after the fit: the scores and the "
                                         r"threshold use the fitted value until the next fit"):
        after = det.score_samples(X)
    np.testing.assert_array_equal(after, before)


def test_set_threshold_pins_until_scores_change(fitted):
    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    det.set_threshold(fpr=0.25)
    assert _flagged(det, X) == pytest.approx(0.25, abs=0.003) and det.contamination == "auto"
    det.set_threshold(score=-1.5)
    assert det.offset_ == -1.5 and det.threshold_ == {"score": -1.5}
    with pytest.raises(ValueError, match="score must be a number, not a bool"):
        det.set_threshold(score=True)  # was taken as 1.0
    assert det.threshold_ == {"score": -1.5}
    np.testing.assert_array_equal(det.predict(X) == -1, det.score_samples(X) < -1.5)
    restored = pickle.loads(pickle.dumps(det))
    assert restored.offset_ == -1.5
    det.set_params(latent_weight=1.0)  # the pinned score would be stale: released
    assert det.threshold_ is None and det.offset_ != -1.5
    det.offset_ = -2.0  # a plain assignment pins a score threshold
    assert det.threshold_ == {"score": -2.0}
    for bad in ({}, {"fpr": 0.1, "score": 1.0}, {"fpr": 1.0}, {"contamination": 0.7}, {"score": float("nan")}):
        with pytest.raises(ValueError):
            det.set_threshold(**bad)
    with pytest.raises(AttributeError):
        GANAnomalyDetector().set_threshold(fpr=0.1)  # not fitted


def test_threshold_from_labels_best_f1_and_target_fpr():
    rng = np.random.RandomState(0)
    y = np.r_[np.zeros(300, int), np.ones(30, int)]
    scores = np.r_[rng.randn(300), rng.randn(30) - 2.5]  # anomalies score lower
    t = threshold_from_labels(y, scores)
    best = max(f1_score(y, scores < c) for c in np.unique(scores) + 1e-9)
    assert f1_score(y, scores < t) == pytest.approx(best)
    t = threshold_from_labels(y, scores, target_fpr=0.05)
    fpr = np.mean(scores[y == 0] < t)
    assert fpr <= 0.05 and fpr > 0.04  # as many flags as the budget allows
    with pytest.raises(ValueError, match="finite"):
        threshold_from_labels(y, np.r_[scores[:-1], np.nan])
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_from_labels(y, scores, target_fpr=0)


def test_thresholds_survive_save_and_load(fitted, tmp_path):
    import json

    import gananomaly

    X, det = fitted
    det = pickle.loads(pickle.dumps(det))
    det.save(tmp_path / "follow")
    loaded = gananomaly.load(tmp_path / "follow")
    np.testing.assert_allclose(loaded.training_components_, det.training_components_)
    assert loaded.threshold_ is None and loaded.offset_ == pytest.approx(det.offset_, abs=1e-12)
    loaded.set_params(contamination=0.2)  # a loaded model reads new thresholds as a fitted one does
    assert _flagged(loaded, X) == pytest.approx(0.2, abs=0.003)
    det.set_threshold(fpr=0.05)
    det.save(tmp_path / "pinned")
    pinned = gananomaly.load(tmp_path / "pinned")
    assert pinned.threshold_ == {"contamination": 0.05} and pinned.offset_ == pytest.approx(det.offset_)
    det.set_threshold(fpr=0.7)  # any false-positive rate in (0, 1) saves, not only contaminations up to 0.5
    det.save(tmp_path / "wide")
    assert _flagged(gananomaly.load(tmp_path / "wide"), X) == pytest.approx(0.7, abs=0.003)
    # a recorded offset_ that disagrees with the stored training scores is refused
    cfg_path = tmp_path / "pinned" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fitted"]["offset_"] += 1.0
    cfg_path.write_text(json.dumps(with_record_digest(cfg)))  # forged to match
    with pytest.raises(ValueError, match="offset_.*does not match"):
        gananomaly.load(tmp_path / "pinned")
    cfg["fitted"]["offset_"] -= 1.0
    cfg["fitted"]["threshold_"] = {"contamination": 1.0}
    cfg_path.write_text(json.dumps(with_record_digest(cfg)))  # forged to match
    with pytest.raises(ValueError, match="threshold_"):
        gananomaly.load(tmp_path / "pinned")


def test_grid_search_with_the_anomaly_scorer_picks_the_better_model():
    """GridSearchCV with y = 1 for anomalies: scoring="roc_auc" inverts (it ranks by
    decision_function, higher = more normal); anomaly_scorer() does not."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    from gananomaly.metrics import anomaly_auroc, anomaly_scorer

    rng = np.random.RandomState(0)
    X = np.r_[rng.randn(300, 3), rng.randn(30, 3) * 0.3 + 4.0]
    y = np.r_[np.zeros(300, int), np.ones(30, int)]
    fold = np.r_[np.full(200, -1), np.zeros(130, int)]  # fit on 200 normal rows, validate on the rest
    grid = {"component": ["reconstruction", "latent"]}
    det = GANAnomalyDetector(epochs=3, encoder_epochs=3, random_state=0)
    good = GridSearchCV(det, grid, scoring=anomaly_scorer, cv=PredefinedSplit(fold)).fit(X, y)
    bad = GridSearchCV(det, grid, scoring="roc_auc", cv=PredefinedSplit(fold)).fit(X, y)
    assert good.best_score_ > 0.9 and bad.best_score_ < 0.5
    assert good.best_score_ == pytest.approx(1 - bad.cv_results_["mean_test_score"].min())
    refit = good.best_estimator_
    assert anomaly_auroc(y[200:], refit.score_samples(X[200:])) > 0.9
