"""Every "auto" rule of the detector, in one place (the benchmarks import them too).

Measurements behind these choices are in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import math

__all__ = [
    "MAX_GAN_STEPS", "IMAGE_GAN_STEPS", "MAX_IMAGE_EPOCHS", "EVAL_STEPS", "PATIENCE", "ENCODER_STEPS",
    "MIN_VALIDATION_ROWS", "MAX_VALIDATION_ROWS",
    "auto_objective", "auto_learning_rates", "auto_betas",
    "auto_width", "auto_latent_dim", "auto_knn_weight", "training_budget", "encoder_epochs",
    "training_threads", "THREAD_ENV",
]

# Upper bound on discriminator steps of an ``epochs="auto"`` fit; training normally stops
# earlier, when the held-out fidelity stops improving.
MAX_GAN_STEPS = 12000
# Convolutional (image) fits: at most this many discriminator steps (and at most
# MAX_IMAGE_EPOCHS epochs). Fewer steps leave a generator whose samples are far narrower than
# the images (low reverse density), while the AUROC barely moves: the fidelity decided it.
IMAGE_GAN_STEPS = 10000
MAX_IMAGE_EPOCHS = 2000
# Fidelity is measured about every this many discriminator steps...
EVAL_STEPS = 250
# ...and training stops after this many measurements without a better generator.
PATIENCE = 16
# Encoder (izif) training: about this many steps, at most as many epochs as the GAN had.
ENCODER_STEPS = 3000
# Fewer held-out rows than this make the k-NN fidelity measures meaningless: the fidelity
# is then measured against (a sample of) the training rows instead.
MIN_VALIDATION_ROWS = 20
# At most this many rows (and as many generated rows) enter a fidelity measurement.
MAX_VALIDATION_ROWS = 1000


def auto_objective(image: bool, conditional: bool) -> str:
    """``objective="auto"``: the minimax GAN (non-saturating loss, spectral norm in D)."""
    return "gan"


def auto_learning_rates(objective: str, learning_rate: float | None, generator_learning_rate: float | None,
                        conditional: bool = False) -> tuple[float, float]:
    """``(discriminator, generator)`` Adam learning rates.

    ``learning_rate=None``: 2e-4 for ``"gan"``, 1e-4 for ``"wgan-gp"``;
    ``generator_learning_rate=None``: the discriminator's; half of it for a conditional
    ``"gan"`` (with :func:`auto_betas`' ``(0, 0.9)``: two time-scale updates). Unconditional,
    the wider generator that draws detected worse on small tables and ranked broken columns less
    reliably; conditional, the equal-rate generator drew each context's rows at about half their
    spread, and the two time-scale one at their spread at the same detection
    (benchmarks/NOTES.md).
    """
    d_lr = float(learning_rate) if learning_rate is not None else (1e-4 if objective == "wgan-gp" else 2e-4)
    if generator_learning_rate is not None:
        return d_lr, float(generator_learning_rate)
    return d_lr, (d_lr / 2 if conditional and objective == "gan" else d_lr)


def auto_betas(objective: str, conditional: bool = False) -> tuple[float, float]:
    """``betas=None``: Adam's ``(beta1, beta2)`` for G and D: (0.5, 0.9) for WGAN-GP, (0, 0.9)
    for a conditional ``"gan"`` (see :func:`auto_learning_rates`), DCGAN's (0.5, 0.999)
    otherwise."""
    if objective == "wgan-gp":
        return (0.5, 0.9)
    return (0.0, 0.9) if conditional else (0.5, 0.999)


def auto_knn_weight(image: bool) -> float:
    """``knn_weight="auto"``: 3 for tables; 0 for images, where D's global features react
    to a whole patch's texture and drown small defects (noise patches score as normal)."""
    return 0.0 if image else 3.0


def auto_width(n_features: int) -> int:
    """Default hidden width of the MLPs: 4 x n_features, between 128 and 256. (Narrower
    networks, 32 units and up, generated mixtures whose dependence structure was blurred.)"""
    return int(min(256, max(128, 4 * n_features)))


def auto_latent_dim(n_features: int) -> int:
    """Default latent size: the number of features, between 2 and 64. (Half of it cannot
    represent full-rank data, so the generator smeared its samples across the gaps. At least
    16 latent dimensions drew a ring of 8 modes in the plane more faithfully, but detected
    worse on iris and wine: benchmarks/NOTES.md.)"""
    return int(min(64, max(2, n_features)))


def training_budget(n_batches: int, epochs, image: bool = False) -> tuple[int, int]:
    """``(max_epochs, eval_every)`` of a fit with ``n_batches`` batches per epoch.

    ``epochs="auto"``: up to :data:`MAX_GAN_STEPS` discriminator steps for tables,
    fidelity measured about every :data:`EVAL_STEPS` steps; convolutional image fits cost
    far more per step and run up to :data:`IMAGE_GAN_STEPS` steps (10 to
    :data:`MAX_IMAGE_EPOCHS` epochs), with the same early stopping. An
    explicit ``epochs`` is the exact number of epochs, with the same evaluation rhythm.
    """
    n_batches = max(1, int(n_batches))
    eval_every = max(1, round(EVAL_STEPS / n_batches))
    if epochs == "auto" and image:
        max_epochs = int(min(MAX_IMAGE_EPOCHS, max(10, math.ceil(IMAGE_GAN_STEPS / n_batches))))
        return max_epochs, min(eval_every, max_epochs)
    if epochs == "auto":
        return int(math.ceil(MAX_GAN_STEPS / n_batches)), eval_every
    return int(epochs), min(eval_every, int(epochs))


def encoder_epochs(gan_epochs: int, n_batches: int) -> int:
    """Default izif encoder epochs: about :data:`ENCODER_STEPS` steps, at most ``gan_epochs``."""
    return int(max(1, min(gan_epochs, math.ceil(ENCODER_STEPS / max(1, n_batches)))))


# Environment variables by which a user fixes the thread count; when one is set, or the
# count was changed with torch.set_num_threads, training uses it unchanged.
THREAD_ENV = ("GANANOMALY_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def training_threads(conv: bool, current: int, default: int, env: dict) -> int:
    """Intra-op threads for training.

    Table (MLP) training steps are small matrix products on 64-row batches: split over
    threads they gain little on an idle machine and collapse when a core is busy (threads
    wait on each other at every step), so they run on one thread. Convolutional training
    keeps ``current``. An explicit choice (``GANANOMALY_NUM_THREADS``, ``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS`` or a ``torch.set_num_threads`` call that changed ``current`` from
    torch's ``default``) is always respected; ``GANANOMALY_NUM_THREADS`` wins.
    """
    value = env.get("GANANOMALY_NUM_THREADS")
    if value is not None and str(value).strip().isdigit() and int(value) > 0:
        return int(value)
    if conv or current != default or any(env.get(name) for name in THREAD_ENV[1:]):
        return current
    return 1
