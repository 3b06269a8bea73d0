"""The adversarial training loop.

Two objectives (``"gan"``: the 2014 minimax game with the non-saturating generator loss
and ``k`` discriminator steps per generator step; ``"wgan-gp"``: Wasserstein loss with
gradient penalty) and two ways to obtain the encoder (``"izif"``: trained after the GAN
with generator and discriminator frozen, as f-AnoGAN; ``"bigan"``: trained jointly with
the generator against a discriminator that sees ``(x, z)`` pairs, as EGBAD/ALAD).

The loop knows nothing about MLflow, files or displays: it announces its events through
:func:`gananomaly.callbacks.notify` to the callbacks it is given (progress and
checkpointing included).

The module runs past 400 lines because :class:`Trainer` is one object on purpose: both
phases, the fidelity measurements that stop the first one and keep its best generator, and
the complete state a checkpoint saves share the same networks, optimisers and random
generators; split apart, a resumed fit could restore one without the other.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gananomaly import defaults as _defaults
from gananomaly.callbacks import Callback, notify
from gananomaly.fidelity import FIDELITY_KEYS, WARN_FIDELITY, GeneratorFidelityWarning, manifold_metrics

__all__ = ["Callback", "TrainConfig", "Trainer", "GeneratorCollapseWarning", "GeneratorFidelityWarning"]

# Generated samples spreading less than this fraction of the data's spread mean collapse.
COLLAPSE_RATIO = 0.02
# ...or diverged, when they spread more than this many times as much as the data, or when
# the minimax discriminator's loss falls below this (it wins outright).
EXPLOSION_RATIO = 100.0
DIVERGED_D_LOSS = 1e-6


class GeneratorCollapseWarning(UserWarning):
    """The generator's samples have (almost) no diversity: a collapsed GAN."""


@dataclass
class TrainConfig:
    objective: str = "gan"
    encoder: str = "izif"
    epochs: int = 100
    encoder_epochs: int | None = 100  # None: the defaults rule, from the GAN epochs trained
    batch_size: int = 64
    d_steps: int = 1
    learning_rate: float = 2e-4  # discriminator (and izif encoder: see encoder_learning_rate)
    g_learning_rate: float | None = None  # generator (and BiGAN encoder); None: learning_rate
    betas: tuple[float, float] | None = None  # Adam's of G and D; None: defaults.auto_betas(objective)
    encoder_learning_rate: float = 1e-3
    gp_weight: float = 10.0
    kappa: float = 1.0
    ziz_weight: float = 0.0  # weight of the encoder's latent cycle term ||E(G(z)) - z||^2
    amp_dtype: torch.dtype | None = None
    context_dim: int = 0  # trailing one-hot context columns of X (conditional GAN)
    # Fidelity on held-out rows (needs X_val): measured every ``eval_every`` GAN epochs.
    eval_every: int = 1
    # Stop after this many evaluations without a better fidelity (0: never stop early).
    patience: int = 0
    # Restore the generator (and discriminator) of the best evaluation at the end.
    keep_best: bool = False
    # Wall-clock budget of the GAN phase in seconds (None: none). Not deterministic.
    max_time: float | None = None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _interpolates(real: tuple, fake: tuple, gen: torch.Generator) -> tuple:
    """Random points between real and fake inputs (pairs for BiGAN), for WGAN-GP."""
    n = real[0].shape[0]
    out = []
    for r, f in zip(real, fake):
        alpha = torch.rand((n,) + (1,) * (r.dim() - 1), device=r.device, generator=gen)
        out.append((alpha * r + (1 - alpha) * f).requires_grad_(True))
    return tuple(out)


def _gradient_penalty(d_out: torch.Tensor, inputs: tuple) -> torch.Tensor:
    """WGAN-GP penalty: (||grad_x D(x)|| - 1)^2 at the interpolates ``inputs``."""
    grads = torch.autograd.grad(d_out.sum(), inputs, create_graph=True)
    norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads) + 1e-12)
    return ((norm - 1.0) ** 2).mean()


def _check_finite(logs: dict[str, Any]) -> None:
    for key, value in logs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise FloatingPointError(
                f"training diverged: {key}={value} in {logs['phase']} epoch {logs['epoch']}; "
                "lower learning_rate, scale the inputs, or try objective='wgan-gp'"
            )


def _world() -> tuple[int, int]:
    """(rank, world size) under torch.distributed, (0, 1) otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _batches(n: int, batch_size: int, gen: torch.Generator, device: torch.device,
             rank: int = 0, world: int = 1) -> Iterable[torch.Tensor]:
    perm = torch.randperm(n, generator=gen, device=device)
    if world > 1:
        # Every process draws the same permutation and takes its own equal share, so
        # each optimiser step sees world x batch_size distinct rows.
        perm = perm[: n - n % world][rank::world]
        n = perm.shape[0]
    # Drop a ragged tail smaller than half a batch: tiny batches make noisy D steps.
    stop = n if n <= batch_size else n - (n % batch_size if n % batch_size < batch_size // 2 else 0)
    for start in range(0, stop, batch_size):
        yield perm[start : start + batch_size]


class Trainer:
    """Runs the two training phases (``"gan"``, then ``"encoder"`` for izif) and can save and
    restore its complete state (weights, optimiser moments, RNG states, epoch, history) so an
    interrupted fit resumes exactly where its last checkpoint left it."""

    def __init__(
        self,
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
        X_val: torch.Tensor | None = None,
    ):
        self.gen, self.disc, self.enc = gen_net, disc_net, enc_net
        self.X, self.latent_dim, self.cfg, self.rng = X, latent_dim, cfg, rng
        self.channels_last = X.dim() == 4 and X.device.type == "cpu"
        self.rank, self.world = _world()
        # Noise differs between processes (shuffling does not): a generator of its own per rank.
        self.z_rng = rng
        if self.world > 1:
            base = int(torch.randint(0, 2**62, (1,), generator=rng, device=rng.device))
            self.z_rng = torch.Generator(device=X.device).manual_seed(base + self.rank)
        # Data parallelism: the networks being trained are wrapped in DistributedDataParallel,
        # which averages their gradients over the processes during backward (NCCL on GPUs,
        # gloo on CPU) and broadcasts rank 0's buffers (batch-norm statistics, spectral-norm
        # vectors) at every forward, so the replicas stay identical. Each wrapper runs exactly
        # one forward per backward; frozen networks and detached samples use the plain
        # modules.
        self.d_train, self.g_train, self.e_train = disc_net, gen_net, enc_net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [X.device.index] if X.device.type == "cuda" else None
            self.d_train, self.g_train, self.e_train = (DDP(net, device_ids=ids)
                                                        for net in (disc_net, gen_net, enc_net))
        self.estimator, self.callbacks = estimator, list(callbacks)
        self.joint = cfg.encoder == "bigan"
        self.wgan = cfg.objective == "wgan-gp"
        betas = tuple(cfg.betas) if cfg.betas is not None else _defaults.auto_betas(cfg.objective, cfg.context_dim > 0)
        g_lr = cfg.learning_rate if cfg.g_learning_rate is None else cfg.g_learning_rate
        g_params = list(gen_net.parameters()) + (list(enc_net.parameters()) if self.joint else [])
        self.opt_d = torch.optim.Adam(disc_net.parameters(), lr=cfg.learning_rate, betas=betas)
        self.opt_g = torch.optim.Adam(g_params, lr=g_lr, betas=betas)
        self.opt_e = torch.optim.Adam(enc_net.parameters(), lr=cfg.encoder_learning_rate, betas=(0.5, 0.999))
        self.history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "e_loss": [], "g_std_ratio": []}
        self.gan_epoch = 0  # epochs completed per phase
        self.enc_epoch = 0
        self.step = 0
        n = X.shape[0]
        self.n_ctx = cfg.context_dim
        self.data_std = self._sample_part(X).flatten(1).std(0).mean().clamp_min(1e-12)
        n_probe = min(512, max(n, 2))
        self.probe_z = torch.randn(n_probe, latent_dim, device=X.device, generator=rng)
        if self.n_ctx:
            self.probe_z = torch.cat([self.probe_z, X[torch.arange(n_probe) % n, -self.n_ctx:]], dim=1)
        # Fidelity probe: fixed noise (with the held-out rows' own contexts), so every
        # evaluation compares generators, not noise draws.
        self.X_val = X_val
        if X_val is not None:
            self.val_z = torch.randn(X_val.shape[0], latent_dim, device=X.device, generator=rng)
            if self.n_ctx:
                self.val_z = torch.cat([self.val_z, X_val[:, -self.n_ctx:]], dim=1)
            for key in ("fidelity_epoch",) + FIDELITY_KEYS:
                self.history[key] = []
        self.best: dict[str, Any] | None = None  # {"score", "epoch", "bad", "states"}
        self.gan_done = False
        self.gan_seconds = 0.0

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training; only tensors, numbers, strings, lists and
        dicts, so it loads with ``torch.load(weights_only=True)``."""
        state = {
            "generator": self.gen.state_dict(),
            "discriminator": self.disc.state_dict(),
            "encoder": self.enc.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_e": self.opt_e.state_dict(),
            "rng": self.rng.get_state(),
            "z_rng": self.z_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "gan_epoch": self.gan_epoch,
            "enc_epoch": self.enc_epoch,
            "step": self.step,
            "history": {k: list(v) for k, v in self.history.items()},
            "gan_done": self.gan_done,
            "gan_seconds": self.gan_seconds,
        }
        if self.best is not None:
            state["best"] = {"score": self.best["score"], "epoch": self.best["epoch"], "bad": self.best["bad"],
                             "states": self.best["states"]}
        if self.X.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.X.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.load_state_dict(state["generator"])
        self.disc.load_state_dict(state["discriminator"])
        self.enc.load_state_dict(state["encoder"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_e.load_state_dict(state["opt_e"])
        self.rng.set_state(state["rng"])
        if "z_rng" in state:
            self.z_rng.set_state(state["z_rng"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.X.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.X.device)
        self.gan_epoch = int(state["gan_epoch"])
        self.enc_epoch = int(state["enc_epoch"])
        self.step = int(state["step"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.gan_done = bool(state.get("gan_done", False))
        self.gan_seconds = float(state.get("gan_seconds", 0.0))
        best = state.get("best")
        self.best = None if best is None else {"score": float(best["score"]), "epoch": int(best["epoch"]),
                                               "bad": int(best["bad"]), "states": best["states"]}
        notify(self.callbacks, "on_resume", self.estimator, {"epochs_done": self.gan_epoch + self.enc_epoch})

    def _on_any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (a collective: every rank calls it)."""
        import torch.distributed as dist

        value = torch.tensor([float(flag)], dtype=torch.float64, device=self.X.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _mean_over_ranks(self, logs: dict[str, Any]) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        keys = [k for k, v in logs.items() if isinstance(v, float)]
        values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=self.X.device)
        dist.all_reduce(values)
        for k, v in zip(keys, (values / self.world).tolist()):
            logs[k] = v

    def _sync_buffers(self, *nets: nn.Module) -> None:
        """Rank 0's buffers on every rank. A network's batch-norm statistics follow each rank's
        own batches (DistributedDataParallel broadcasts rank 0's only as a wrapped forward
        starts, and forwards of the plain modules update them too): left apart, the ranks
        measured different generators, could keep different ones and stop at different epochs,
        and saved none (their weights differed)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for net in nets:
            for buf in net.buffers():
                dist.broadcast(buf, src=0)

    def _after_epoch(self, logs: dict[str, Any]) -> None:
        notify(self.callbacks, "on_epoch_end", self.estimator, logs)

    # ---------------------------------------------------------------- phases
    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training rows ``idx``; image batches in the networks' memory format."""
        x = self.X[idx]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _set_memory_format(self, fmt: torch.memory_format) -> None:
        for net in (self.gen, self.disc, self.enc):
            net.to(memory_format=fmt)

    def run(self) -> dict[str, list[float]]:
        """Train the networks in place; return the per-epoch history.

        Convolutional networks on the CPU train in channels-last memory format (the CPU
        convolution kernels run faster on it) and are returned in the default format."""
        if self.channels_last:
            self._set_memory_format(torch.channels_last)
        try:
            self._gan_phase()
            if not self.joint:
                self._encoder_phase()
        finally:
            if self.channels_last:
                self._set_memory_format(torch.contiguous_format)
        self.gen.eval(), self.disc.eval(), self.enc.eval()
        notify(self.callbacks, "on_train_end", self.estimator)
        return self.history

    def _sample_part(self, x: torch.Tensor) -> torch.Tensor:
        """The sample columns of an augmented ``[x | c]`` tensor."""
        return x[:, : x.shape[1] - self.n_ctx] if self.n_ctx else x

    def _sample_z(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes for a batch; a conditional GAN's fakes get the batch's contexts, so
        D compares real and generated samples of the same contexts."""
        z = torch.randn(x.shape[0], self.latent_dim, device=self.X.device, generator=self.z_rng)
        return torch.cat([z, x[:, -self.n_ctx:]], dim=1) if self.n_ctx else z

    def _d_inputs(self, x: torch.Tensor, z: torch.Tensor, gen: nn.Module, enc: nn.Module):
        """Real and fake inputs to D: samples alone, or (sample, code) pairs for BiGAN."""
        fake_x = gen(z)
        if self.joint:
            return (x, enc(x)), (fake_x, z)
        return (x,), (fake_x,)

    def _d_step(self, x: torch.Tensor, amp) -> torch.Tensor:
        """One discriminator (critic) update; returns its loss. Real, fake and (WGAN-GP)
        interpolated inputs go through D in one forward pass: one forward per backward,
        as DistributedDataParallel requires."""
        cfg, n = self.cfg, x.shape[0]
        with torch.no_grad(), amp:
            real, fake = self._d_inputs(x, self._sample_z(x), self.gen, self.enc)
        real = tuple(t.float() for t in real)
        fake = tuple(t.float() for t in fake)
        parts = [real, fake]
        if self.wgan:
            inter = _interpolates(real, fake, self.z_rng)
            parts.append(inter)
        inputs = tuple(torch.cat(group) for group in zip(*parts))
        # The critic of WGAN-GP runs in float32: its gradient penalty differentiates twice.
        with (contextlib.nullcontext() if self.wgan else amp):
            out = self.d_train(*inputs).float()
        d_real, d_fake = out[:n], out[n : 2 * n]
        if self.wgan:
            d_loss = d_fake.mean() - d_real.mean() + cfg.gp_weight * _gradient_penalty(out[2 * n :], inter)
        else:
            bce = F.binary_cross_entropy_with_logits
            d_loss = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return d_loss.detach()

    def _gan_phase(self) -> None:
        cfg, X, device = self.cfg, self.X, self.X.device
        gen_net, disc_net, enc_net = self.gen, self.disc, self.enc
        joint, wgan = self.joint, self.wgan
        amp = _autocast(device, cfg.amp_dtype)
        bce = F.binary_cross_entropy_with_logits
        gen_net.train(), disc_net.train(), enc_net.train(joint)
        for epoch in range(self.gan_epoch, cfg.epochs):
            if self.gan_done:
                break
            started = time.perf_counter()
            d_sum = g_sum = e_sum = 0.0
            d_count = g_count = 0
            for idx in _batches(X.shape[0], cfg.batch_size, self.rng, device, self.rank, self.world):
                x = self._batch(idx)
                d_sum += float(self._d_step(x, amp))
                d_count += 1
                self.step += 1
                if self.step % cfg.d_steps:
                    continue
                # Generator (and, for BiGAN, encoder) step.
                for p in disc_net.parameters():
                    p.requires_grad_(False)
                with amp:
                    real, fake = self._d_inputs(x, self._sample_z(x), self.g_train, self.e_train)
                    d_fake = disc_net(*fake).float()
                    g_loss = -d_fake.mean() if wgan else bce(d_fake, torch.ones_like(d_fake))
                    e_loss = torch.zeros((), device=device)
                    if joint:
                        d_real = disc_net(*real).float()
                        e_loss = d_real.mean() if wgan else bce(d_real, torch.zeros_like(d_real))
                self.opt_g.zero_grad(set_to_none=True)
                (g_loss + e_loss).backward()
                self.opt_g.step()
                for p in disc_net.parameters():
                    p.requires_grad_(True)
                g_sum += float(g_loss.detach())
                e_sum += float(e_loss.detach())
                g_count += 1
            self._sync_buffers(gen_net, disc_net, enc_net)
            with torch.no_grad():
                gen_net.eval()
                probe = self._sample_part(gen_net(self.probe_z).float())
                ratio = float(probe.flatten(1).std(0).mean() / self.data_std)
                gen_net.train()
            logs = {
                "phase": "gan",
                "epoch": epoch,
                "d_loss": d_sum / max(d_count, 1),
                "g_loss": g_sum / max(g_count, 1),
                "g_std_ratio": ratio,
            }
            if joint:
                logs["e_loss"] = e_sum / max(g_count, 1)
            self._mean_over_ranks(logs)
            _check_finite(logs)
            for key in ("d_loss", "g_loss", "g_std_ratio") + (("e_loss",) if joint else ()):
                self.history[key].append(logs[key])
            self.gan_epoch = epoch + 1
            self.gan_seconds += time.perf_counter() - started
            out_of_time = cfg.max_time is not None and self.gan_seconds >= cfg.max_time
            if cfg.max_time is not None and self.world > 1:
                out_of_time = self._on_any_rank(out_of_time)  # each rank has its own clock: stop together
            if self.X_val is not None and (self.gan_epoch % cfg.eval_every == 0 or self.gan_epoch == cfg.epochs
                                           or out_of_time):
                self._evaluate(logs)
            if out_of_time:
                self.gan_done = True
            self._after_epoch(logs)
        self._finish_gan_phase()

    def _advice(self) -> str:
        """What to try, by how the GAN phase ended: every epoch of its budget used (for
        ``epochs="auto"`` the step cap, ``defaults.MAX_GAN_STEPS``), ``max_time`` reached, or
        the fidelity no longer improving. The minimax objective is suggested only to a fit that
        used another."""
        cfg = self.cfg
        other = "use objective='gan' or " if self.wgan else ""
        if cfg.max_time is not None and self.gan_seconds >= cfg.max_time and self.gan_epoch < cfg.epochs:
            return (f"max_time ({cfg.max_time:g} s) ended the training after {self.gan_epoch} of {cfg.epochs} "
                    f"epochs: allow more time, or {other}a lower learning_rate.")
        if self.gan_epoch >= cfg.epochs:
            return (f"The training used all its {cfg.epochs} epochs ({self.step} discriminator steps; "
                    f"epochs='auto' stops at a fixed step budget): pass a larger epochs=, or {other}"
                    "a lower learning_rate.")
        return ("Its fidelity stopped improving before the epochs ran out: more epochs will not help; use "
                + ("objective='gan', " if self.wgan else "")
                + "a lower learning_rate or a wider generator (hidden_dims).")

    def _evaluate(self, logs: dict[str, Any]) -> None:
        """Fidelity of the current generator on the held-out rows; remember the best one and
        end the phase after ``patience`` evaluations without improvement."""
        cfg = self.cfg
        metrics = manifold_metrics(self._sample_part(self.X_val), self._probe_samples())
        self.history["fidelity_epoch"].append(self.gan_epoch - 1)
        for key in FIDELITY_KEYS:
            self.history[key].append(metrics[key])
            logs[key] = metrics[key]
        score = metrics["fidelity"]
        if self.best is None or score > self.best["score"] + 1e-6:
            nets = {"generator": self.gen, "discriminator": self.disc}
            if self.joint:
                nets["encoder"] = self.enc
            states = {k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in nets.items()}
            self.best = {"score": score, "epoch": self.gan_epoch - 1, "bad": 0, "states": states}
        else:
            self.best["bad"] += 1
            if cfg.patience and self.best["bad"] >= cfg.patience:
                self.gan_done = True

    def _probe_samples(self) -> torch.Tensor:
        """The generator's samples of the fixed fidelity probe noise (eval mode, no grad),
        leaving the generator in the mode it was in."""
        was_training = self.gen.training
        with torch.no_grad():
            self.gen.eval()
            fake = self._sample_part(self.gen(self.val_z).float())
        self.gen.train(was_training)
        return fake

    def fidelity_report(self, held_out: bool = True) -> dict[str, float]:
        """Fidelity of the current generator on the measured rows ``X_val``, with the Parzen
        log-likelihood gap against as many real rows (empty without ``X_val``). ``held_out``
        False: the measured rows are training rows, so the real window takes half of them and
        the gap is measured on the other half (a window holding the very rows it scores put
        their likelihood tens of nats too high)."""
        if self.X_val is None:
            return {}
        from gananomaly.fidelity import parzen_gap

        fake = self._probe_samples()
        real_val = self._sample_part(self.X_val)
        report = manifold_metrics(real_val, fake)
        if held_out:
            reference, measured = self._sample_part(self.X[: fake.shape[0]]), real_val
        else:
            half = real_val.shape[0] // 2
            reference, measured = real_val[:half], real_val[half:]
        if measured.shape[0] >= 4 and bool(torch.isfinite(fake).all()):
            report.update(parzen_gap(reference, fake[: reference.shape[0]], measured))
        report["n_rows"] = float(real_val.shape[0])
        if self.best is not None:
            report["best_epoch"] = float(self.best["epoch"])
        return report

    def _finish_gan_phase(self) -> None:
        self.gan_done = True
        if self.cfg.keep_best and self.best is not None:
            nets = {"generator": self.gen, "discriminator": self.disc, "encoder": self.enc}
            for key, state in self.best["states"].items():
                nets[key].load_state_dict(state)
        fid = self.history.get("fidelity") or []
        if fid:
            # the measurement of the generator that is kept
            i = fid.index(self.best["score"]) if self.cfg.keep_best and self.best is not None else len(fid) - 1
            final = fid[i]
            if final < WARN_FIDELITY:
                rd = self.history["reverse_density"][i]
                narrow = " (its samples are narrower than the data)" if rd < 0.5 else ""
                warnings.warn(
                    f"the generator has not learned the normal data: on held-out rows its samples reach "
                    f"fidelity {final:.2f} (coverage {self.history['coverage'][i]:.2f}, density "
                    f"{self.history['density'][i]:.2f}, reverse density {rd:.2f}{narrow}; real samples score "
                    f"about 1). Its scores then act as a distance, not a learned density. {self._advice()}",
                    GeneratorFidelityWarning,
                    stacklevel=6,
                )
        ratios = self.history["g_std_ratio"]
        if not ratios:
            return
        # the epoch of the generator that is kept
        kept = min(self.best["epoch"], len(ratios) - 1) if self.cfg.keep_best and self.best is not None \
            else len(ratios) - 1
        if ratios[kept] < COLLAPSE_RATIO:
            warnings.warn(
                f"the generator may have collapsed: at GAN epoch {kept} its samples spread "
                f"{ratios[kept]:.3g} times as much as the training data (below {COLLAPSE_RATIO}); "
                "scores may be unreliable; try objective='wgan-gp', more epochs or a lower learning_rate",
                GeneratorCollapseWarning,
                stacklevel=6,
            )
        elif ratios[kept] > EXPLOSION_RATIO and float(self.data_std) > 1e-6:
            warnings.warn(
                f"training diverged: at GAN epoch {kept} the generator's samples spread {ratios[kept]:.3g} "
                f"times as much as the training data (above {EXPLOSION_RATIO:g}); scores are unreliable; "
                f"lower learning_rate (now {self.cfg.learning_rate:g})",
                GeneratorCollapseWarning,
                stacklevel=6,
            )
        elif not self.wgan and self.history["d_loss"][kept] < DIVERGED_D_LOSS:
            warnings.warn(
                f"training diverged: at GAN epoch {kept} the discriminator tells every generated row from "
                f"the real ones (loss {self.history['d_loss'][kept]:.3g}), so the generator gets no "
                f"gradient; scores are unreliable; lower learning_rate (now {self.cfg.learning_rate:g})",
                GeneratorCollapseWarning,
                stacklevel=6,
            )

    def _encoder_phase(self) -> None:
        """f-AnoGAN's izif encoder training: G and D frozen, E minimises the image residual
        plus ``kappa`` times the discriminator-feature residual of ``G(E(x))`` (plus, with
        ``ziz_weight``, that times the latent residual of ``E(G(z))`` on noise)."""
        cfg, X = self.cfg, self.X
        gen_net, disc_net, enc_net = self.gen, self.disc, self.enc
        n_epochs = cfg.encoder_epochs
        if n_epochs is None:
            n_batches = max(1, (X.shape[0] // self.world) // cfg.batch_size)
            n_epochs = _defaults.encoder_epochs(self.gan_epoch, n_batches)
        gen_net.eval(), disc_net.eval(), enc_net.train()
        frozen = [p for net in (gen_net, disc_net) for p in net.parameters()]
        for p in frozen:
            p.requires_grad_(False)
        amp = _autocast(X.device, cfg.amp_dtype)
        try:
            for epoch in range(self.enc_epoch, n_epochs):
                total, count = 0.0, 0
                for idx in _batches(X.shape[0], cfg.batch_size, self.rng, X.device, self.rank, self.world):
                    x = self._batch(idx)
                    with amp:
                        if cfg.ziz_weight:
                            # noise through G and back: E learns to invert every mode G draws, a
                            # small one included (from real rows alone E can map it onto another).
                            # One forward of E for both (DistributedDataParallel wants one).
                            z = self._sample_z(x)
                            with torch.no_grad():
                                drawn = gen_net(z).to(x.dtype)
                            codes = self.e_train(torch.cat([x, drawn]))
                            code, cycled = codes[: x.shape[0]], codes[x.shape[0]:]
                        else:
                            code = self.e_train(x)
                        x_hat = gen_net(code)
                        loss = F.mse_loss(x_hat.float(), x)
                        if cfg.kappa:
                            loss = loss + cfg.kappa * F.mse_loss(
                                disc_net.features(x_hat).float(), disc_net.features(x).float()
                            )
                        if cfg.ziz_weight:
                            k = self.latent_dim
                            loss = loss + cfg.ziz_weight * F.mse_loss(cycled.float()[:, :k], z[:, :k])
                    self.opt_e.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt_e.step()
                    total += float(loss.detach())
                    count += 1
                self._sync_buffers(enc_net)
                logs = {"phase": "encoder", "epoch": epoch, "e_loss": total / max(count, 1)}
                self._mean_over_ranks(logs)
                _check_finite(logs)
                self.history["e_loss"].append(logs["e_loss"])
                self.enc_epoch = epoch + 1
                self._after_epoch(logs)
        finally:
            for p in frozen:
                p.requires_grad_(True)
