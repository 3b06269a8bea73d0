"""The adversarial training loop.

Two objectives (``"gan"``: the 2014 minimax game with the non-saturating generator loss
and ``k`` discriminator steps per generator step; ``"wgan-gp"``: Wasserstein loss with
gradient penalty) and two ways to obtain the encoder (``"izif"``: trained after the GAN
with generator and discriminator frozen, as f-AnoGAN; ``"bigan"``: trained jointly with
the generator against a discriminator that sees ``(x, z)`` pairs, as EGBAD/ALAD).

The loop knows nothing about MLflow or files: observers get every epoch through
:class:`Callback` objects.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Callback", "TrainConfig", "train"]


class Callback:
    """Observer of a fit. Subclass it and override what you need.

    ``logs`` passed to :meth:`on_epoch_end` holds ``phase`` (``"gan"`` or ``"encoder"``),
    ``epoch`` (0-based within the phase) and the mean losses of that epoch
    (``d_loss``, ``g_loss``, ``e_loss``) plus ``g_std_ratio``, the spread of generated
    samples relative to the training data (near 0 means the generator collapsed).
    """

    def on_fit_begin(self, estimator: Any, info: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def on_epoch_end(self, estimator: Any, logs: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def on_fit_end(self, estimator: Any) -> None:  # pragma: no cover
        pass


@dataclass
class TrainConfig:
    objective: str = "gan"
    encoder: str = "izif"
    epochs: int = 100
    encoder_epochs: int = 100
    batch_size: int = 64
    d_steps: int = 1
    learning_rate: float = 2e-4
    encoder_learning_rate: float = 1e-3
    gp_weight: float = 10.0
    kappa: float = 1.0
    amp_dtype: torch.dtype | None = None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _gradient_penalty(disc: nn.Module, real: tuple, fake: tuple, gen: torch.Generator) -> torch.Tensor:
    """WGAN-GP penalty on random interpolates of real and fake inputs (pairs for BiGAN)."""
    n = real[0].shape[0]
    inputs = []
    for r, f in zip(real, fake):
        alpha = torch.rand((n,) + (1,) * (r.dim() - 1), device=r.device, generator=gen)
        inputs.append((alpha * r.detach() + (1 - alpha) * f.detach()).requires_grad_(True))
    out = disc(*inputs)
    grads = torch.autograd.grad(out.sum(), inputs, create_graph=True)
    norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads) + 1e-12)
    return ((norm - 1.0) ** 2).mean()


def _check_finite(logs: dict[str, Any]) -> None:
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(
                f"training diverged: {key}={value} in {logs['phase']} epoch {logs['epoch']}; "
                "lower learning_rate, scale the inputs, or try objective='wgan-gp'"
            )


def _batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device) -> Iterable[torch.Tensor]:
    perm = torch.randperm(n, generator=gen, device=device)
    # Drop a ragged tail smaller than half a batch: tiny batches make noisy D steps.
    stop = n if n <= batch_size else n - (n % batch_size if n % batch_size < batch_size // 2 else 0)
    for start in range(0, stop, batch_size):
        yield perm[start : start + batch_size]


def train(
    gen_net: nn.Module,
    disc_net: nn.Module,
    enc_net: nn.Module,
    X: torch.Tensor,
    latent_dim: int,
    cfg: TrainConfig,
    rng: torch.Generator,
    *,
    estimator: Any = None,
    callbacks: Iterable[Callback] = (),
    progress: Any = None,
) -> dict[str, list[float]]:
    """Train the networks in place on ``X`` (already on the target device); return history."""
    device = X.device
    n = X.shape[0]
    callbacks = list(callbacks)
    joint = cfg.encoder == "bigan"
    wgan = cfg.objective == "wgan-gp"
    betas = (0.5, 0.9) if wgan else (0.5, 0.999)
    g_params = list(gen_net.parameters()) + (list(enc_net.parameters()) if joint else [])
    opt_d = torch.optim.Adam(disc_net.parameters(), lr=cfg.learning_rate, betas=betas)
    opt_g = torch.optim.Adam(g_params, lr=cfg.learning_rate, betas=betas)
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "e_loss": [], "g_std_ratio": []}
    data_std = X.flatten(1).std(0).mean().clamp_min(1e-12)
    probe_z = torch.randn(min(512, max(n, 2)), latent_dim, device=device, generator=rng)
    amp = _autocast(device, cfg.amp_dtype)

    def sample_z(m: int) -> torch.Tensor:
        return torch.randn(m, latent_dim, device=device, generator=rng)

    def d_inputs(x: torch.Tensor, z: torch.Tensor):
        """Real and fake inputs to D: samples alone, or (sample, code) pairs for BiGAN."""
        fake_x = gen_net(z)
        if joint:
            return (x, enc_net(x)), (fake_x, z)
        return (x,), (fake_x,)

    gen_net.train(), disc_net.train(), enc_net.train(joint)
    step = 0
    for epoch in range(cfg.epochs):
        d_sum = g_sum = e_sum = 0.0
        d_count = g_count = 0
        for idx in _batches(n, cfg.batch_size, rng, device):
            x = X[idx]
            m = x.shape[0]
            # Discriminator step.
            with amp:
                real, fake = d_inputs(x, sample_z(m))
                real = tuple(t.detach() for t in real)
                fake = tuple(t.detach() for t in fake)
                d_real, d_fake = disc_net(*real).float(), disc_net(*fake).float()
                if wgan:
                    d_loss = d_fake.mean() - d_real.mean()
                else:
                    d_loss = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + \
                        F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            if wgan:
                d_loss = d_loss + cfg.gp_weight * _gradient_penalty(disc_net, real, fake, rng)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d_sum += float(d_loss.detach())
            d_count += 1
            step += 1
            if step % cfg.d_steps:
                continue
            # Generator (and, for BiGAN, encoder) step.
            for p in disc_net.parameters():
                p.requires_grad_(False)
            with amp:
                real, fake = d_inputs(x, sample_z(m))
                d_fake = disc_net(*fake).float()
                if wgan:
                    g_loss = -d_fake.mean()
                else:
                    g_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
                e_loss = torch.zeros((), device=device)
                if joint:
                    d_real = disc_net(*real).float()
                    if wgan:
                        e_loss = d_real.mean()
                    else:
                        e_loss = F.binary_cross_entropy_with_logits(d_real, torch.zeros_like(d_real))
            opt_g.zero_grad(set_to_none=True)
            (g_loss + e_loss).backward()
            opt_g.step()
            for p in disc_net.parameters():
                p.requires_grad_(True)
            g_sum += float(g_loss.detach())
            e_sum += float(e_loss.detach())
            g_count += 1
        with torch.no_grad():
            gen_net.eval()
            ratio = float(gen_net(probe_z).flatten(1).std(0).mean() / data_std)
            gen_net.train()
        logs = {
            "phase": "gan",
            "epoch": epoch,
            "d_loss": d_sum / max(d_count, 1),
            "g_loss": g_sum / max(g_count, 1),
            "e_loss": e_sum / max(g_count, 1) if joint else float("nan"),
            "g_std_ratio": ratio,
        }
        _check_finite({k: v for k, v in logs.items() if k != "e_loss" or joint})
        for key in ("d_loss", "g_loss", "g_std_ratio") + (("e_loss",) if joint else ()):
            history[key].append(logs[key])
        for cb in callbacks:
            cb.on_epoch_end(estimator, logs)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_loss']:.3f}")

    if not joint:
        history["e_loss"] = _train_izif(
            gen_net, disc_net, enc_net, X, cfg, rng,
            estimator=estimator, callbacks=callbacks, progress=progress,
        )
    gen_net.eval(), disc_net.eval(), enc_net.eval()
    return history


def _train_izif(
    gen_net: nn.Module,
    disc_net: nn.Module,
    enc_net: nn.Module,
    X: torch.Tensor,
    cfg: TrainConfig,
    rng: torch.Generator,
    *,
    estimator: Any,
    callbacks: list[Callback],
    progress: Any,
) -> list[float]:
    """f-AnoGAN's izif encoder training: G and D frozen, E minimises the image residual
    plus ``kappa`` times the discriminator-feature residual of ``G(E(x))``."""
    gen_net.eval(), disc_net.eval(), enc_net.train()
    frozen = [p for net in (gen_net, disc_net) for p in net.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    opt = torch.optim.Adam(enc_net.parameters(), lr=cfg.encoder_learning_rate, betas=(0.5, 0.999))
    amp = _autocast(X.device, cfg.amp_dtype)
    losses: list[float] = []
    try:
        for epoch in range(cfg.encoder_epochs):
            total, count = 0.0, 0
            for idx in _batches(X.shape[0], cfg.batch_size, rng, X.device):
                x = X[idx]
                with amp:
                    x_hat = gen_net(enc_net(x))
                    loss = F.mse_loss(x_hat.float(), x)
                    if cfg.kappa:
                        loss = loss + cfg.kappa * F.mse_loss(
                            disc_net.features(x_hat).float(), disc_net.features(x).float()
                        )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                count += 1
            logs = {"phase": "encoder", "epoch": epoch, "e_loss": total / max(count, 1)}
            _check_finite(logs)
            losses.append(logs["e_loss"])
            for cb in callbacks:
                cb.on_epoch_end(estimator, logs)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(e=f"{logs['e_loss']:.4f}")
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return losses
