"""Where the detector draws the line between normal and anomalous, movable after the fit
(:class:`ThresholdMixin`, a part of :class:`~gananomaly.estimator.GANAnomalyDetector`).

The standardised components of (a sample of) the training rows are kept after the fit, so
``offset_`` follows every parameter that changes the scores and ``set_threshold`` moves the
line without refitting.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.utils.validation import check_is_fitted

from gananomaly import scoring as _scoring
from gananomaly.data import refuse_bool_numbers

__all__ = ["ThresholdMixin"]


class ThresholdMixin:
    # Parameters that change the scores (or the share of outliers) after the fit: setting
    # any of them releases a threshold pinned by set_threshold, and offset_ follows them.
    _SCORE_PARAMS = frozenset({"contamination", "component", "weight", "latent_weight", "knn_weight"})

    def training_scores(self) -> np.ndarray:
        """``score_samples`` of (a seeded sample of at most ``scoring.TRAIN_SCORE_ROWS``) training
        rows under the current parameters, recombined from the stored standardised components:
        the distribution every threshold is read from."""
        check_is_fitted(self)
        std = {name: self.training_components_[:, i] for i, name in enumerate(_scoring.COMPONENTS)}
        std["combined"] = _scoring.combine(std, self.weight, self.latent_weight, self._knn_weight())
        return self._select(std)

    @property
    def offset_(self) -> float:
        """The threshold on ``score_samples``: a sample scoring below it is an outlier.

        Read from the training scores under the *current* parameters (``contamination``,
        ``weight``, ``component``...), so changing them after the fit never leaves a stale
        threshold; or pinned by :meth:`set_threshold`."""
        if "_offset" in self.__dict__:  # a plain value (set directly)
            return self.__dict__["_offset"]
        check_is_fitted(self)
        pinned = self.threshold_ or {}
        if "score" in pinned:
            return float(pinned["score"])
        return _scoring.threshold_at(self.training_scores(), pinned.get("contamination", self.contamination))

    @offset_.setter
    def offset_(self, value: float) -> None:
        if "training_components_" in self.__dict__:
            self.set_threshold(score=float(value))
        else:  # no training scores to read a threshold from: a fixed value
            self.__dict__["_offset"] = float(value)

    def set_threshold(self, *, contamination=None, fpr: float | None = None, score: float | None = None):
        """Move the outlier threshold without refitting; give exactly one of:

        contamination : "auto" or float in (0, 0.5]
            As the constructor parameter, read from the training scores.
        fpr : float in (0, 1)
            The share of the (normal) training rows to flag: the false-positive rate measured
            on the training data.
        score : float
            A threshold on ``score_samples`` itself (e.g. from
            :func:`gananomaly.metrics.threshold_from_labels`).

        The threshold stays pinned until a parameter that changes the scores is set again
        (``set_params(weight=...)`` etc.), which returns it to ``contamination``. Returns self.
        """
        check_is_fitted(self, "training_components_")
        given = {k: v for k, v in {"contamination": contamination, "fpr": fpr, "score": score}.items()
                 if v is not None}
        if len(given) != 1:
            raise ValueError(f"set_threshold takes exactly one of contamination, fpr, score; got {sorted(given)}")
        ((key, value),) = given.items()
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{key} must be a number, not a bool; got {value!r}")
        if key == "contamination" and not (value == "auto" or (isinstance(value, Real) and 0 < value <= 0.5)):
            raise ValueError(f"contamination must be 'auto' or a float in (0, 0.5], got {value!r}")
        if key == "fpr" and not (isinstance(value, Real) and 0 < value < 1):
            raise ValueError(f"fpr must be a float in (0, 1), got {value!r}")
        if key == "score" and not (isinstance(value, Real) and np.isfinite(value)):
            raise ValueError(f"score must be a finite number, got {value!r}")
        self.__dict__.pop("_offset", None)
        if key == "fpr":
            key = "contamination"
        self.threshold_ = {key: value if value == "auto" else float(value)}
        return self

    def set_params(self, **params):
        fitted = "training_components_" in self.__dict__
        if fitted:
            # The scores follow these at once (no fit runs to check them): a bad value is
            # refused here, naming it, and the detector keeps its parameters.
            from sklearn.utils._param_validation import validate_parameter_constraints

            valid = self.get_params(deep=True)
            unknown = sorted(k for k in params if k not in valid)
            if unknown:  # before any parameter is set: none of this call applies
                raise ValueError(f"invalid parameter(s) {unknown} for {type(self).__name__}; valid parameters: "
                                 f"{sorted(self.get_params(deep=False))}")
            checked = {k: v for k, v in params.items() if k in self._parameter_constraints}
            validate_parameter_constraints({k: self._parameter_constraints[k] for k in checked}, checked,
                                           caller_name=type(self).__name__)
            refuse_bool_numbers(self._parameter_constraints, checked, type(self).__name__)
        super().set_params(**params)
        if fitted and self._SCORE_PARAMS & set(params):
            self.threshold_ = None
        return self

