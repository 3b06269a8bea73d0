"""GANAnomalyDetector: a GAN anomaly detector behind the scikit-learn outlier contract.

This module holds the contract itself: parameters, input validation, ``fit`` and the
scoring methods. The class reads its other parts from mixins, each in its own module:
thresholds (:mod:`gananomaly.thresholds`), the saved record (:mod:`gananomaly.record`),
maps, explanations and samples (:mod:`gananomaly.inspection`). It runs past 400 lines
because the class docstring documents each of its thirty parameters and every fitted
attribute in one place, as scikit-learn's estimators do.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from gananomaly import callbacks as _callbacks
from gananomaly import checkpoint as _ckpt
from gananomaly import context as _context
from gananomaly import data as _data
from gananomaly import defaults as _defaults
from gananomaly import images as _images
from gananomaly import scoring as _scoring
from gananomaly._atomic import fitted_state_kept
from gananomaly.callbacks import Callback
from gananomaly.inspection import InspectionMixin
from gananomaly.model_format import MAX_LEARNING_RATE
from gananomaly.networks import build_networks, mlp_spec
from gananomaly.record import NETS as _NETS
from gananomaly.record import RecordMixin
from gananomaly.thresholds import ThresholdMixin
from gananomaly.training import TrainConfig, Trainer

__all__ = ["GANAnomalyDetector"]

log = logging.getLogger(__name__)



# Columns of :meth:`GANAnomalyDetector.score_table`, the one scoring output.
SCORE_COLUMNS = (*_scoring.COMPONENTS, "combined", "score", "label")


def empty_score_table() -> pd.DataFrame:
    """:meth:`GANAnomalyDetector.score_table` of no rows: its columns and dtypes."""
    return pd.DataFrame({c: np.empty(0, dtype=np.int64 if c == "label" else np.float64) for c in SCORE_COLUMNS})


# torch's own intra-op thread count when gananomaly was imported: a different count at fit
# time means the user chose one.
_DEFAULT_THREADS = torch.get_num_threads()


def _resume(trainer: Trainer, store, resume: bool) -> None:
    """With ``resume``, continue from the checkpoint in ``store`` (if there is one)."""
    if not resume:
        return
    if store is None:
        raise ValueError("fit(resume=True) needs checkpoint_dir to be set")
    state = store.load(trainer.X.device)
    if state is None:
        log.warning("resume: no checkpoint in %s; the fit starts from the beginning", store.path)
    else:
        try:
            epochs = (int(state["gan_epoch"]), int(state["enc_epoch"]))
            limits = (trainer.cfg.epochs, trainer.cfg.encoder_epochs)  # None: decided during the fit
            if any(e < 0 or (lim is not None and e > lim) for e, lim in zip(epochs, limits)):
                raise ValueError(f"it records epochs {epochs}, beyond this fit's {limits}")
            trainer.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a forged or foreign state
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"checkpoint {str(store.path)!r} does not fit this fit ({type(exc).__name__}: "
                             f"{detail[:300]}); delete it to start the fit over, or use another "
                             "checkpoint_dir") from exc
        log.info("resumed from %s at GAN epoch %d, encoder epoch %d",
                 store.path, trainer.gan_epoch, trainer.enc_epoch)


# Images whose mean brightness lies more than this many training standard deviations from the
# training images' (for most of a batch) are warned about as being in another pixel range.
PIXEL_RANGE_WARN = 10.0


class GANAnomalyDetector(InspectionMixin, RecordMixin, ThresholdMixin, OutlierMixin, BaseEstimator):
    """Anomaly detector built on a generative adversarial network trained on normal data.

    A generator ``G`` learns the distribution of the training data against a
    discriminator ``D``; an encoder ``E`` learns to map samples into ``G``'s latent space.
    Every sample then gets two scores (both "higher = more anomalous", robustly
    standardised on the training data: 0 is the training median, 1 is one training IQR):

    * ``reconstruction``: mean squared residual between ``x`` and ``G(E(x))`` (``z``
      optionally refined by ``n_refine_steps`` batched gradient steps);
    * ``discriminator``: mean squared residual between the inner-layer features of ``D``
      for ``x`` and for ``G(E(x))`` (feature matching; never the output sigmoid);
    * ``latent``: squared Mahalanobis distance of the code ``z`` from the codes of the
      training data (catches samples on the generator's manifold but where normal data
      never lies, which the residuals cannot see);
    * ``knn``: mean distance of D's inner features of ``x`` to those of its 5 nearest
      training rows (a non-parametric density in the space the discriminator learned),
      averaged (each standardised) with that distance divided by those rows' own mean
      distance to their 5 nearest (a local density, as LOF's, so that a row just off a tight
      cluster is not called dense because the cluster is);

    and their combination
    ``(1 - weight) * (reconstruction + latent_weight * latent) + weight * discriminator
    + knn_weight * knn``.
    ``score_samples`` returns minus the chosen score, so higher means more normal, exactly
    as :class:`sklearn.ensemble.IsolationForest`.

    Parameters
    ----------
    objective : {"auto", "gan", "wgan-gp"}, default="auto"
        ``"auto"``: ``"gan"`` (see :func:`gananomaly.defaults.auto_objective`; chosen on
        held-out generator fidelity and detection side by side, benchmarks/NOTES.md).
        ``"gan"``: the minimax game with the non-saturating generator loss and
        ``d_steps`` discriminator steps per generator step, spectral normalisation in D.
        ``"wgan-gp"``: Wasserstein critic with gradient penalty ``gp_weight``.
    encoder : {"izif", "bigan"}, default="izif"
        ``"izif"``: the encoder is trained after the GAN with G and D frozen, minimising
        ``||x - G(E(x))||^2 + kappa * ||f(x) - f(G(E(x)))||^2`` (f-AnoGAN).
        ``"bigan"``: the encoder is trained jointly with G against a discriminator that
        sees ``(x, z)`` pairs (EGBAD/ALAD).
    component : {"combined", "reconstruction", "discriminator", "latent", "knn"}, default="combined"
        The score behind ``score_samples``/``decision_function``/``predict``.
    weight : float in [0, 1], default=0.1
        Weight of the discriminator term in the combined score (AnoGAN's lambda).
    latent_weight : float >= 0, default=0.5
        Weight of the latent-code distance added to the reconstruction term. 0 gives
        AnoGAN's two-term score. Our benchmark (5 seeds): 0.5 raised iris from 0.83 to
        0.96 AUROC and generated local anomalies from 0.92 to 0.95, and left breast cancer,
        wine and digits within 0.003.
    knn_weight : float >= 0 or "auto", default="auto"
        Weight of the ``knn`` component (mean distance of D's features of ``x`` to those of
        its 5 nearest training rows) added to the combined score. 0 leaves it out.
        ``"auto"``: 3 for tables, 0 for images (:func:`gananomaly.defaults.auto_knn_weight`).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected proportion of outliers. A float sets ``offset_`` to that percentile of
        the training scores. ``"auto"`` uses Tukey's fence on the training scores:
        ``offset_ = Q1 - 1.5 * IQR`` of ``score_samples`` on the training data.
    epochs : int or "auto", default="auto"
        GAN training epochs. ``"auto"``: up to ``gananomaly.defaults.MAX_GAN_STEPS``
        discriminator steps, stopped early when the generator's fidelity on held-out rows
        stops improving (see ``early_stopping``). An int trains exactly that many epochs.
    encoder_epochs : int or None, default=None
        Epochs of izif encoder training (None: about ``gananomaly.defaults.ENCODER_STEPS``
        steps, at most as many epochs as the GAN trained).
    validation_fraction : float in [0, 0.5), default=0.1
        Share of the training rows held out (never trained on) to measure how well the
        generator learned the data: k-NN precision/recall, density/coverage and the Parzen
        log-likelihood gap (:mod:`gananomaly.fidelity`), recorded in ``history_`` and
        ``fidelity_``. With fewer than ``gananomaly.defaults.MIN_VALIDATION_ROWS`` held-out
        rows nothing is held out and fidelity is measured against the training rows.
        0 turns fidelity measurement (and early stopping) off.
    early_stopping : bool or "auto", default="auto"
        Stop the GAN phase after ``n_iter_no_change`` fidelity measurements without
        improvement and keep the generator (and discriminator) of the best measurement.
        ``"auto"``: on when ``epochs="auto"``.
    n_iter_no_change : int or None, default=None
        Patience of early stopping in measurements (None: ``gananomaly.defaults.PATIENCE``).
    max_time : float or None, default=None
        Wall-clock budget of the GAN phase in seconds. Fits that hit it are not
        reproducible from ``random_state`` alone.
    batch_size : int, default=64
    latent_dim : int or None, default=None
        None: the number of features, between 2 and 64.
    hidden_dims : tuple of int or None, default=None
        Hidden layer widths of G, D and E. None: two layers of 4 x n_features units,
        between 128 and 256.
    d_steps : int or None, default=None
        Discriminator steps per generator step (Goodfellow's k). None: 1 for ``"gan"``,
        5 for ``"wgan-gp"``.
    learning_rate : float or None, default=None
        Adam learning rate of D (and of G unless ``generator_learning_rate`` is given).
        None: 2e-4 for ``"gan"``, 1e-4 for ``"wgan-gp"``.
    generator_learning_rate : float or None, default=None
        Adam learning rate of G (and of E with ``encoder="bigan"``). None: D's; half of D's
        for a ``"gan"`` fitted with a ``context``.
    betas : tuple of two floats in [0, 1) or None, default=None
        Adam's ``(beta1, beta2)`` for G and D. None: (0.5, 0.999) for ``"gan"``, (0.5, 0.9)
        for ``"wgan-gp"``, (0, 0.9) for a ``"gan"`` fitted with a ``context``. Without a
        context, ``generator_learning_rate=1e-4, betas=(0, 0.9)`` (two time-scale updates, no
        momentum) draws a generator as wide as the data, at a cost in detection on small tables;
        with one it is the default: the equal-rate generator drew each context's rows at about
        half their spread (benchmarks/NOTES.md).
    encoder_learning_rate : float, default=1e-3
    gp_weight : float, default=10.0
    kappa : float, default=1.0
        Weight of the feature residual in izif encoder training and latent refinement.
    ziz_weight : float, default=0.0
        Weight of a latent cycle term in izif encoder training: ``||E(G(z)) - z||^2`` on noise
        ``z``, so the encoder also learns to invert what the generator draws. It helps data with a
        small mode that ``E`` otherwise maps onto a large one (``benchmarks/NOTES.md``: the
        premium tier of the mixed table, 10 % of its rows, reconstructed as another tier).
    n_refine_steps : int, default=0
        Gradient steps on ``z`` at scoring time, all rows at once (AnoGAN's search,
        started from ``E(x)``).
    refine_lr : float, default=0.05
    dropout : float in [0, 1), default=0.0
        Dropout in the discriminator during training (always off at scoring time).
    network : {"auto", "mlp", "conv"}, default="auto"
        ``"auto"``: convolutional (DCGAN-style) G, D and E for image input (a 3-D or 4-D
        array), MLPs for 2-D input. ``"mlp"`` on image input flattens every image to
        ``C*H*W`` features. ``"conv"`` requires image input.
    channels : {"auto", "first", "last"}, default="auto"
        Layout of 4-D image input: ``"first"`` is ``(n, C, H, W)``, ``"last"`` is
        ``(n, H, W, C)``. ``"auto"`` reads axis 1 as the channels when it is 1 or 3, else
        axis 3 when it is 1 or 3 (so ``(n, 3, 3, 3)`` or ``(n, 1, 8, 3)`` are read channel-first;
        pass ``"last"`` for those). 3-D input ``(n, H, W)`` is one grey channel.
    image_size : int or None, default=None
        Side of the square images the convolutional networks see (a power of two >= 8).
        None: the smallest of 8, 16, 32, 64 that holds ``max(H, W)``, 64 for larger input.
        Images are resized to it with bilinear interpolation (antialiased when shrinking);
        non-square images are stretched.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        ``"auto"``: bf16 autocast on CUDA, fp32 on CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, noise and shuffling. The same int gives identical scores on CPU
        with the same number of torch threads (``torch.get_num_threads()``). Table
        networks train on one thread unless the thread count was chosen explicitly
        (:func:`gananomaly.defaults.training_threads`).
    verbose : int, default=0
        > 0 shows a progress bar on a terminal, and elsewhere (a log file, a pipe) a line on
        stderr about every tenth of the epochs; per-epoch losses are logged at INFO.
    checkpoint_dir : str or None, default=None
        Directory where ``fit`` writes a training checkpoint (weights, optimiser states,
        RNG states, epoch, history) every ``checkpoint_every`` epochs, atomically.
        ``fit(X, resume=True)`` continues from it after an interruption (even SIGKILL),
        losing at most one interval, and ends with exactly the model an uninterrupted
        fit would have produced.
    checkpoint_every : int, default=10
    callbacks : sequence of Callback or None, default=None
        Observers of the fit (see :class:`gananomaly.Callback`), e.g. MLflow logging.

    Attributes
    ----------
    generator_, discriminator_, encoder_ : torch.nn.Module
    offset_ : float
        Threshold on ``score_samples`` (outlier below it), read from ``training_components_``
        under the current parameters, or pinned by :meth:`set_threshold`.
    training_components_ : ndarray of shape (n, 4)
        Standardised components (``scoring.COMPONENTS`` order) of a seeded sample of at most
        10,000 training rows: the training-score distribution thresholds are read from.
    threshold_ : dict or None
        A threshold pinned by :meth:`set_threshold` (``{"contamination": c}`` or
        ``{"score": s}``); None follows ``contamination``.
    n_features_in_ : int
        For images: ``C * H * W`` of the training images.
    image_shape_ : tuple (C, H, W) or None
        Channel-first shape of the training images (None for 2-D input); scoring input must
        have the same channels and size.
    feature_names_in_ : ndarray of str (only when fitted on a DataFrame with string columns)
    history_ : dict of lists
        Per-epoch ``d_loss``, ``g_loss``, ``g_std_ratio`` and ``e_loss``; per fidelity
        measurement ``fidelity_epoch`` (the GAN epoch measured), ``precision``, ``recall``,
        ``density``, ``coverage`` and ``fidelity``.
    fidelity_ : dict
        Fidelity of the final generator on the held-out rows: ``precision``, ``recall``,
        ``density``, ``coverage``, ``fidelity``, ``parzen_ll``, ``parzen_ll_real``,
        ``parzen_gap`` (nats per row, generated minus real samples), ``n_rows``,
        ``held_out`` (1.0 when measured on held-out rows, 0.0 on training rows: a table too
        small to hold out ``MIN_VALIDATION_ROWS``; its Parzen window then takes half of them and
        the gap is measured on the other half) and ``best_epoch``. Empty with
        ``validation_fraction=0``.
    n_epochs_ : int
        GAN epochs trained.
    device_ : torch.device
    arch_ : dict
        The architecture spec (rebuilds the networks on load).
    score_config_ : ScoreConfig
        Fitted scoring settings and the robust location/scale of each component.
    """

    _parameter_constraints: dict = {
        "objective": [StrOptions({"auto", "gan", "wgan-gp"})],
        "encoder": [StrOptions({"izif", "bigan"})],
        "component": [StrOptions({"combined", "reconstruction", "discriminator", "latent", "knn"})],
        "weight": [Interval(Real, 0, 1, closed="both")],
        "latent_weight": [Interval(Real, 0, None, closed="left")],
        "knn_weight": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "epochs": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "encoder_epochs": [None, Interval(Integral, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "n_iter_no_change": [None, Interval(Integral, 1, None, closed="left")],
        "max_time": [None, Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "latent_dim": [None, Interval(Integral, 1, None, closed="left")],
        "hidden_dims": [None, tuple, list],
        "d_steps": [None, Interval(Integral, 1, None, closed="left")],
        "learning_rate": [None, Interval(Real, 0, MAX_LEARNING_RATE, closed="right")],
        "generator_learning_rate": [None, Interval(Real, 0, MAX_LEARNING_RATE, closed="right")],
        "betas": [None, tuple, list],
        "encoder_learning_rate": [Interval(Real, 0, MAX_LEARNING_RATE, closed="right")],
        "gp_weight": [Interval(Real, 0, None, closed="left")],
        "kappa": [Interval(Real, 0, None, closed="left")],
        "ziz_weight": [Interval(Real, 0, None, closed="left")],
        "n_refine_steps": [Interval(Integral, 0, None, closed="left")],
        "refine_lr": [Interval(Real, 0, MAX_LEARNING_RATE, closed="right")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "network": [StrOptions({"auto", "mlp", "conv"})],
        "channels": [StrOptions({"auto", "first", "last"})],
        "image_size": [None, Interval(Integral, 8, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "fp32", "bf16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "checkpoint_dir": [None, str, os.PathLike],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
        "callbacks": [None, list, tuple],
    }

    def __init__(
        self,
        *,
        objective: str = "auto",
        encoder: str = "izif",
        component: str = "combined",
        weight: float = 0.1,
        latent_weight: float = 0.5,
        knn_weight: float | str = "auto",
        contamination: str | float = "auto",
        epochs: int | str = "auto",
        encoder_epochs: int | None = None,
        validation_fraction: float = 0.1,
        early_stopping: bool | str = "auto",
        n_iter_no_change: int | None = None,
        max_time: float | None = None,
        batch_size: int = 64,
        latent_dim: int | None = None,
        hidden_dims: tuple[int, ...] | None = None,
        d_steps: int | None = None,
        learning_rate: float | None = None,
        generator_learning_rate: float | None = None,
        betas: tuple[float, float] | None = None,
        encoder_learning_rate: float = 1e-3,
        gp_weight: float = 10.0,
        kappa: float = 1.0,
        ziz_weight: float = 0.0,
        n_refine_steps: int = 0,
        refine_lr: float = 0.05,
        dropout: float = 0.0,
        network: str = "auto",
        channels: str = "auto",
        image_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
        checkpoint_dir: str | None = None,
        checkpoint_every: int = 10,
        callbacks: tuple[Callback, ...] | None = None,
    ):
        self.objective = objective
        self.encoder = encoder
        self.component = component
        self.weight = weight
        self.latent_weight = latent_weight
        self.knn_weight = knn_weight
        self.contamination = contamination
        self.epochs = epochs
        self.encoder_epochs = encoder_epochs
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.max_time = max_time
        self.batch_size = batch_size
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.d_steps = d_steps
        self.learning_rate = learning_rate
        self.generator_learning_rate = generator_learning_rate
        self.betas = betas
        self.encoder_learning_rate = encoder_learning_rate
        self.gp_weight = gp_weight
        self.kappa = kappa
        self.ziz_weight = ziz_weight
        self.n_refine_steps = n_refine_steps
        self.refine_lr = refine_lr
        self.dropout = dropout
        self.network = network
        self.channels = channels
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.callbacks = callbacks

    # ------------------------------------------------------------------ input handling
    def _validate_input(self, X, *, reset: bool) -> np.ndarray:
        """2-D input: ``validate_data``. Image input: an ``(n, C, H, W)`` float array (or, for
        ``network="mlp"``, its flattening to ``(n, C*H*W)``)."""
        if _images.is_image_input(X):
            arr, shape = _images.validate_images(
                X, channels=self.channels, reset=reset,
                mlp=self.network == "mlp" if reset else self.arch_["kind"] == "mlp",
                fitted_shape=None if reset else getattr(self, "image_shape_", None),
                fitted_features=None if reset else self.n_features_in_)
            if reset:
                self.image_shape_ = tuple(int(v) for v in shape)
                self.n_features_in_ = int(np.prod(shape))
                self.__dict__.pop("feature_names_in_", None)
            return arr
        if reset:
            self.image_shape_ = None
        elif getattr(self, "image_shape_", None) is not None and self.arch_["kind"] == "conv":
            raise ValueError(
                f"this detector was fitted on images of shape {tuple(self.image_shape_)} (C, H, W); "
                f"pass an array (n, H, W), (n, C, H, W) or (n, H, W, C) of such images, "
                f"got shape {getattr(X, 'shape', None)}"
            )
        _data.check_table(X)
        X = validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32],
            ensure_min_samples=2 if reset else 1,
        )
        if reset and self.network == "conv":
            raise ValueError(
                f"network='conv' needs image input of shape (n, H, W), (n, C, H, W) or (n, H, W, C); "
                f"got a 2-D array of shape {X.shape}"
            )
        return X

    def _fit_scaler(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature location/scale for 2-D input, per-channel for images."""
        if X.ndim == 4:
            return _images.fit_channel_scaler(X)
        return _data.fit_scaler(X, getattr(self, "feature_names_in_", None))

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        if X.ndim == 4:
            return _images.to_image_tensor(X, self.input_mean_, self.input_scale_, self.arch_["size"])
        return _data.to_tensor(X, self.input_mean_, self.input_scale_)

    def _unscale(self, out: np.ndarray) -> np.ndarray:
        """Network output back to the units (and, for images, the size) of the fitted data."""
        if out.ndim == 4:
            out = _images.resize(out, self.image_shape_[1:])
            return out * self.input_scale_[:, None, None] + self.input_mean_[:, None, None]
        return out * self.input_scale_ + self.input_mean_

    def _build_arch(self, X: np.ndarray) -> dict[str, Any]:
        if X.ndim == 4:
            return _images.image_arch(self, X)
        hidden = self.hidden_dims
        if hidden is not None:
            if len(hidden) == 0 or not all(isinstance(h, Integral) and h > 0 for h in hidden):
                raise ValueError(f"hidden_dims must be a non-empty tuple of positive ints, got {hidden!r}")
        return mlp_spec(
            X.shape[1], self.latent_dim, hidden,
            joint=self.encoder == "bigan",
            spectral_norm=self.objective_ == "gan",
            dropout=self.dropout,
        )

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, context=None, resume: bool = False):
        """Train the GAN and the encoder on ``X`` (normal data); ``y`` is ignored.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        context : array-like of shape (n_samples,), default=None
            A known condition of each row (class label, machine id, hour bucket...). The
            GAN becomes conditional: G, D and E all receive the context (one-hot), and a
            sample is scored against what is normal *for its context*. Scoring methods
            then need the context of every row too. Tabular input only.
        resume : bool, default=False
            Continue from the checkpoint in ``checkpoint_dir`` (if one exists; otherwise
            start afresh). The checkpoint must come from the same data and parameters.

        Returns
        -------
        self

        A fit that raises leaves the detector exactly as it was before (the previous model,
        if any, still scores; an unfitted detector stays unfitted).
        """
        with fitted_state_kept(self, private=("_offset",)):
            return self._fit(X, context=context, resume=resume)

    def _fit(self, X, *, context, resume: bool):
        self._validate_params()
        _data.refuse_bool_numbers(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)
        callbacks = _callbacks.check_callbacks(self.callbacks)  # a copy: the parameter is never modified
        X = self._validate_input(X, reset=True)
        device = _data.resolve_device(self.device)
        amp_dtype = _data.resolve_precision(self.precision, device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if resume and self.random_state is None and self.checkpoint_dir is not None:
            # random_state=None: the interrupted fit drew its own seed; continue with it
            seed = _ckpt.recorded_seed(self.checkpoint_dir, default=seed)

        self.input_mean_, self.input_scale_ = self._fit_scaler(X)
        self.objective_ = (self.objective if self.objective != "auto"
                           else _defaults.auto_objective(image=X.ndim == 4, conditional=context is not None))
        ctx = self._encode_context(context, X, reset=True)
        self.arch_ = self._build_arch(X)  # before _to_tensor: images are resized to the networks' size
        if ctx is not None:
            self.arch_["context_dim"] = int(ctx.shape[1])
        Xt = self._to_tensor(X)
        if ctx is not None:
            Xt = torch.cat([Xt, ctx], dim=1)
        X_fit, X_val, held_out = self._validation_split(Xt, seed)
        cfg, n_batches = self._train_config(X_fit.shape[0], X_val is not None, amp_dtype,
                                            0 if ctx is None else int(ctx.shape[1]))
        info = {"n_samples": Xt.shape[0], "n_features": self.n_features_in_, "epochs": cfg.epochs,
                "encoder_epochs": cfg.encoder_epochs, "device": str(device)}
        fork_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            nets = tuple(net.to(device) for net in build_networks(self.arch_))
            rng = torch.Generator(device=device).manual_seed(seed)
            trainer = Trainer(*nets, X_fit.to(device), self.arch_["latent_dim"], cfg, rng, estimator=self,
                              X_val=None if X_val is None else X_val.to(device))
            store = (_ckpt.CheckpointStore(self.checkpoint_dir, self._checkpoint_fingerprint(Xt, cfg, seed))
                     if self.checkpoint_dir is not None else None)
            trainer.callbacks = callbacks + self._builtin_callbacks(cfg, n_batches, store, trainer)
            try:
                _callbacks.notify(trainer.callbacks, "on_fit_begin", self, info)
                _resume(trainer, store, resume)
                threads = _defaults.training_threads(self.arch_["kind"] == "conv", torch.get_num_threads(),
                                                     _DEFAULT_THREADS, os.environ)
                with _data.num_threads(threads):
                    history = trainer.run()
            except BaseException:
                _callbacks.notify(trainer.callbacks, "on_fit_exit", self)
                raise
        try:
            self.generator_, self.discriminator_, self.encoder_ = nets
            self.device_, self.history_, self.n_epochs_ = device, history, trainer.gan_epoch
            self.fidelity_ = trainer.fidelity_report(held_out)
            if self.fidelity_:
                self.fidelity_["held_out"] = 1.0 if held_out else 0.0
            self._fit_scoring(Xt, device, amp_dtype, cfg.context_dim, seed)
            _callbacks.notify(trainer.callbacks, "on_fit_end", self)
        finally:
            _callbacks.notify(trainer.callbacks, "on_fit_exit", self)
        return self

    def _train_config(self, n_fit: int, validate: bool, amp_dtype, context_dim: int) -> tuple[TrainConfig, int]:
        """The training settings the parameters (and their ``"auto"`` rules) give for
        ``n_fit`` training rows; also the number of batches per epoch."""
        batch_size = min(self.batch_size, n_fit)
        n_batches = max(1, n_fit // batch_size)
        epochs, eval_every = _defaults.training_budget(n_batches, self.epochs, image=self.arch_["kind"] == "conv")
        early = self.epochs == "auto" if self.early_stopping == "auto" else bool(self.early_stopping)
        early = early and validate
        wgan = self.objective_ == "wgan-gp"
        d_lr, g_lr = _defaults.auto_learning_rates(self.objective_, self.learning_rate, self.generator_learning_rate,
                                                   conditional=context_dim > 0)
        cfg = TrainConfig(
            objective=self.objective_,
            encoder=self.encoder,
            epochs=epochs,
            encoder_epochs=None if self.encoder_epochs is None else int(self.encoder_epochs),
            eval_every=eval_every,
            patience=(int(self.n_iter_no_change or _defaults.PATIENCE)) if early else 0,
            keep_best=early,
            max_time=None if self.max_time is None else float(self.max_time),
            batch_size=batch_size,
            d_steps=self.d_steps if self.d_steps is not None else (5 if wgan else 1),
            learning_rate=d_lr,
            g_learning_rate=g_lr,
            betas=self._betas(conditional=context_dim > 0),
            encoder_learning_rate=self.encoder_learning_rate,
            gp_weight=self.gp_weight,
            kappa=self.kappa,
            ziz_weight=float(self.ziz_weight),
            amp_dtype=amp_dtype,
            context_dim=context_dim,
        )
        return cfg, n_batches

    def _betas(self, conditional: bool = False) -> tuple[float, float]:
        """Adam's betas of G and D: the parameter, validated, or the objective's rule."""
        if self.betas is None:
            return _defaults.auto_betas(self.objective_, conditional)
        b = tuple(self.betas)
        if len(b) != 2 or not all(isinstance(v, Real) and not isinstance(v, bool) and 0 <= v < 1 for v in b):
            raise ValueError(f"betas must be two floats in [0, 1), got {self.betas!r}")
        return float(b[0]), float(b[1])

    def _builtin_callbacks(self, cfg: TrainConfig, n_batches: int, store, trainer: Trainer) -> list:
        """The observers the parameters ask for: a progress display (``verbose``) and
        checkpoints (``checkpoint_dir``)."""
        out: list = []
        if self.verbose:
            enc_total = (_defaults.encoder_epochs(cfg.epochs, n_batches) if cfg.encoder_epochs is None
                         else cfg.encoder_epochs)
            out.append(_callbacks.ProgressBar(cfg.epochs + (0 if self.encoder == "bigan" else enc_total)))
        if store is not None:
            out.append(_callbacks.Checkpointer(store.save, trainer.state_dict, self.checkpoint_every,
                                               rank=trainer.rank))
        return out

    def _fit_scoring(self, Xt: torch.Tensor, device: torch.device, amp_dtype, context_dim: int, seed: int) -> None:
        """The scoring statistics of the trained networks on the training rows: latent and
        k-NN references, each component's robust location/scale, the training scores."""
        self.score_config_ = _scoring.ScoreConfig(
            joint=self.encoder == "bigan",
            n_refine_steps=int(self.n_refine_steps),
            refine_lr=float(self.refine_lr),
            kappa=float(self.kappa),
            batch_size=65536 if device.type == "cuda" else 8192,
            amp_dtype=amp_dtype,
            context_dim=context_dim,
        )
        if self.arch_["kind"] == "conv":
            self.score_config_.map_scale = _scoring.fit_map_scale(self.generator_, self.encoder_, Xt, device,
                                                                  self._score_cfg(Xt).batch_size)
        raw = self._raw_scores(Xt)
        _scoring.fit_latent(raw, self.score_config_)
        _scoring.fit_knn(raw, self.score_config_, seed)
        for name in _scoring.stat_names(self.score_config_.knn_own is not None):
            if not np.isfinite(raw[name]).all():
                raise FloatingPointError(f"the trained model gives non-finite {name} scores on the training data")
            loc, scale = _scoring.robust_stats(raw[name])
            self.score_config_.loc[name] = loc
            self.score_config_.scale[name] = scale
        std = _scoring.standardise(raw, self.score_config_)
        n = len(raw["reconstruction"])
        keep = np.arange(n) if n <= _scoring.TRAIN_SCORE_ROWS else np.sort(
            np.random.RandomState(seed).choice(n, _scoring.TRAIN_SCORE_ROWS, replace=False))
        self.training_components_ = np.stack([std[name][keep] for name in _scoring.COMPONENTS], axis=1)
        self.threshold_ = None
        self.__dict__.pop("_offset", None)

    def _validation_split(self, Xt: torch.Tensor, seed: int):
        """``(rows to train on, rows to measure fidelity on, held_out)``.

        A random ``validation_fraction`` of the rows is held out when that gives at least
        ``MIN_VALIDATION_ROWS`` rows; otherwise every row is trained on and fidelity is
        measured on (a sample of) the training rows. At most ``MAX_VALIDATION_ROWS`` rows
        are measured."""
        n = Xt.shape[0]
        if self.validation_fraction == 0:
            return Xt, None, False
        perm = torch.from_numpy(np.random.RandomState(seed).permutation(n))
        n_val = int(round(self.validation_fraction * n))
        cap = _defaults.MAX_VALIDATION_ROWS
        if n_val >= _defaults.MIN_VALIDATION_ROWS and n - n_val >= 2:
            val_idx, fit_idx = perm[:n_val], perm[n_val:].sort().values
            return Xt[fit_idx], Xt[val_idx[:cap]], True
        return Xt, Xt[perm[:cap]], False

    def _encode_context(self, context, X: np.ndarray, *, reset: bool) -> torch.Tensor | None:
        """Context columns as a float32 tensor (None without a context); with ``reset`` the
        context's categories (or numeric scaler) are fitted and recorded."""
        if reset:
            ctx, self.context_categories_, self.context_mean_, self.context_scale_ = _context.fit(context, X)
            self.context_names_ = None if context is None else _context.names(context)
            return ctx
        return _context.encode(context, X, getattr(self, "context_categories_", None),
                               getattr(self, "context_mean_", None), getattr(self, "context_scale_", None),
                               getattr(self, "context_names_", None))

    def _prepare(self, X, context) -> tuple[torch.Tensor, np.ndarray]:
        """Validated scoring input as a tensor (with the context columns, if any)."""
        check_is_fitted(self)
        Xv = self._validate_input(X, reset=False)
        if Xv.ndim == 4:
            self._check_pixel_range(Xv)
        ctx = self._encode_context(context, Xv, reset=False)
        Xt = self._to_tensor(Xv)
        return (Xt if ctx is None else torch.cat([Xt, ctx], dim=1)), Xv

    def _check_pixel_range(self, X: np.ndarray) -> None:
        """Warn when most images' mean brightness lies more than :data:`PIXEL_RANGE_WARN` training
        standard deviations from the training images', or their pixels spread more than
        :data:`PIXEL_RANGE_WARN` times more, or 50 times less (0-255 images given to a model
        fitted on 0-1 ones, or the reverse): every such image would score as an outlier."""
        if X.shape[0] == 0:
            return
        flat = X.reshape(X.shape[0], X.shape[1], -1)
        z = np.abs(flat.mean(axis=2, dtype=np.float64) - self.input_mean_) / self.input_scale_
        ratio = flat.std(axis=2, dtype=np.float64) / self.input_scale_
        # 0-1 images given to a 0-255 model: their pixels spread a fiftieth of the training pixels or less
        off = (z > PIXEL_RANGE_WARN) | (ratio > PIXEL_RANGE_WARN) | (ratio * PIXEL_RANGE_WARN**2 < 2)
        if np.mean(off.any(axis=1)) > 0.5:
            mean, sd = np.round(self.input_mean_, 3).tolist(), np.round(self.input_scale_, 3).tolist()
            warnings.warn(f"these images lie far outside the training images' pixel range (training mean {mean}, "
                          f"standard deviation {sd} per channel): are they in another range (0-255 against 0-1)? "
                          "They all score as outliers for that alone; scale them as the training images were",
                          UserWarning, stacklevel=3)

    def _checkpoint_fingerprint(self, Xt: torch.Tensor, cfg: TrainConfig, seed: int) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the data, every training setting (one
        key per parameter, so a refusal names it) and the seed drawn from ``random_state``
        (it chose the held-out rows)."""
        params = {f"params.{k}": repr(v if v is None or isinstance(v, (str, int, float, tuple, list))
                                      else type(v).__name__)
                  for k, v in self.get_params(deep=False).items()
                  if k not in ("verbose", "callbacks", "checkpoint_dir", "checkpoint_every", "device", "random_state")
                  and not (k == "ziz_weight" and v == 0)}  # checkpoints written before it resume
        return {**params, "seed": int(seed), "arch": repr(sorted(self.arch_.items())),
                "epochs": cfg.epochs, "encoder_epochs": cfg.encoder_epochs, "data": _ckpt.tensor_digest(Xt)}

    # ------------------------------------------------------------------ scoring
    def _raw_scores(self, Xt: torch.Tensor, n_refine_steps: int | None = None) -> dict[str, np.ndarray]:
        cfg = self._score_cfg(Xt)
        if n_refine_steps is not None:
            cfg = dataclasses.replace(cfg, n_refine_steps=int(n_refine_steps))
        return _scoring.raw_scores(self.generator_, self.discriminator_, self.encoder_, Xt, self.device_, cfg)

    def _score_cfg(self, Xt: torch.Tensor) -> _scoring.ScoreConfig:
        """Scoring settings; image batches are kept to a size whose conv activations fit memory."""
        cfg = self.score_config_
        changed = [f"{k}={getattr(self, k)!r} (fitted with {getattr(cfg, k)!r})"
                   for k in ("n_refine_steps", "refine_lr", "kappa") if getattr(self, k) != getattr(cfg, k)]
        if changed:
            warnings.warn(f"{', '.join(changed)} set after the fit: the scores and the threshold use the fitted "
                          "value until the next fit (the standardisation was fitted with it). To study another "
                          "refinement without refitting: score_components(X, raw=True, n_refine_steps=...)",
                          UserWarning, stacklevel=4)
        if Xt.dim() != 4:
            return self.score_config_
        return dataclasses.replace(self.score_config_, batch_size=_images.score_batch_size(Xt, self.device_))

    def _standardise(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        std = _scoring.standardise(raw, self.score_config_)
        std["combined"] = _scoring.combine(std, self.weight, self.latent_weight, self._knn_weight())
        return std

    def _finite(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` (of :attr:`component`), refused when not finite: a NaN score would be an
        inlier to ``predict``. (:meth:`score_table` leaves them for its callers' policies: the
        jobs skip or name such rows, the pyfunc refuses them.)"""
        bad = ~np.isfinite(scores)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"the {self.component} score of row {'indices' if len(rows) > 1 else 'index'} "
                f"{', '.join(map(str, rows[:5].tolist()))}{' ...' if len(rows) > 5 else ''} is not finite "
                f"(NaN or infinity): the model's statistics or weights are damaged, or its refinement diverges "
                f"(refine_lr {self.score_config_.refine_lr:g}); load an undamaged copy or refit")
        return scores

    def _knn_weight(self) -> float:
        if self.knn_weight == "auto":
            return _defaults.auto_knn_weight(self.arch_["kind"] == "conv")
        return float(self.knn_weight)

    def _select(self, std: dict[str, np.ndarray]) -> np.ndarray:
        """score_samples convention (higher = more normal) for the chosen component."""
        return -std[self.component]

    def score_components(self, X, *, context=None, raw: bool = False, n_refine_steps: int | None = None
                         ) -> pd.DataFrame:
        """Every anomaly score of every sample, higher = more anomalous.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        context : array-like of shape (n_samples,), default=None
            Required when the detector was fitted with a context.
        raw : bool, default=False
            False: robustly standardised on the training data (0 = training median,
            1 = one training IQR), as used by ``score_samples``. True: the unstandardised
            residuals, ``knn`` the distance alone (``combined`` is then still computed from
            the standardised ones).
        n_refine_steps : int or None, default=None
            With ``raw=True`` only: refine each latent code with this many steps instead of the
            fitted number (to study refinement without refitting; the standardisation and the
            threshold were fitted with the fitted number, so other outputs keep it).

        Returns
        -------
        DataFrame with columns ``discriminator``, ``reconstruction``, ``latent``, ``knn``,
        ``combined``, indexed like ``X`` when ``X`` is a DataFrame.
        """
        if n_refine_steps is not None and (not raw or isinstance(n_refine_steps, bool)
                                           or not isinstance(n_refine_steps, Integral) or n_refine_steps < 0):
            raise ValueError(f"n_refine_steps= needs raw=True and a non-negative int, got {n_refine_steps!r} "
                             f"(raw={raw!r})")
        index = X.index if isinstance(X, pd.DataFrame) else None
        rawv = self._raw_scores(self._prepare(X, context)[0], n_refine_steps)
        std = self._standardise(rawv)
        cols = rawv if raw else std
        return pd.DataFrame(
            {"discriminator": cols["discriminator"], "reconstruction": cols["reconstruction"],
             "latent": cols["latent"], "knn": cols["knn"], "combined": std["combined"]},
            index=index,
        )

    def score_table(self, X, *, context=None) -> pd.DataFrame:
        """The scoring output every consumer writes (pyfunc, batch jobs, image tables), from
        one pass through the networks.

        Returns
        -------
        DataFrame with columns :data:`SCORE_COLUMNS`: the components and ``combined``
        (higher = more anomalous, as :meth:`score_components`), ``score`` (=
        :meth:`score_samples`) and ``label`` (+1/-1, = :meth:`predict`), indexed like ``X``
        when ``X`` is a DataFrame.
        """
        out = self.score_components(X, context=context).astype(np.float64)
        out["score"] = -out[self.component].to_numpy()
        out["label"] = np.where(out["score"].to_numpy() - self.offset_ < 0, -1, 1).astype(np.int64)
        return out[list(SCORE_COLUMNS)]

    def score_samples(self, X, *, context=None) -> np.ndarray:
        """Minus the anomaly score chosen by ``component``: the lower, the more abnormal.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        context : array-like of shape (n_samples,), default=None
            Required when the detector was fitted with a context.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._finite(self._select(self._standardise(self._raw_scores(self._prepare(X, context)[0]))))

    def fit_predict(self, X, y=None, *, context=None, **kwargs) -> np.ndarray:
        """Fit on ``X`` and return its +1/-1 labels."""
        return self.fit(X, context=context, **kwargs).predict(X, context=context)

    def decision_function(self, X, *, context=None) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers, positive for inliers."""
        return self.score_samples(X, context=context) - self.offset_

    def predict(self, X, *, context=None) -> np.ndarray:
        """+1 for inliers, -1 for outliers (``decision_function < 0``)."""
        decision = self.decision_function(X, context=context)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[decision < 0] = -1
        return labels

    def __getstate__(self):
        state = super().__getstate__()
        if "device_" not in state:
            return state
        # Networks travel as CPU state dicts (spectral-norm modules cannot be pickled as
        # objects, and CPU tensors load on machines without the GPU they were trained on).
        state = dict(state)
        for name in _NETS:
            net = state.pop(name)
            state["_state_" + name] = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state["device_"] = str(state["device_"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        nets = {name: state.pop("_state_" + name) for name in _NETS if "_state_" + name in state}
        super().__setstate__(state)
        if nets:
            try:
                device = _data.resolve_device(self.device_)
            except ValueError:
                device = torch.device("cpu")
            for name, net in zip(_NETS, build_networks(self.arch_)):
                net.load_state_dict(nets[name])
                setattr(self, name, net.to(device).eval())
            self.device_ = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
