"""Generator, discriminator and encoder networks.

Every network is built from a plain, JSON-serialisable *spec* dictionary so that a saved
model can be rebuilt exactly from its config file (see :mod:`gananomaly.persistence`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

__all__ = ["MLPGenerator", "MLPDiscriminator", "MLPEncoder", "build_networks", "mlp_spec"]

_SLOPE = 0.2


def mlp_spec(
    n_features: int,
    latent_dim: int | None = None,
    hidden_dims: tuple[int, ...] | None = None,
    *,
    joint: bool = False,
    spectral_norm: bool = False,
    dropout: float = 0.0,
    context_dim: int = 0,
) -> dict[str, Any]:
    """Architecture spec for the MLP networks, with sizes derived from ``n_features``.

    The defaults (:func:`gananomaly.defaults.auto_latent_dim`, :func:`~gananomaly.defaults.auto_width`)
    give the generator as many latent dimensions as features (at most 64) and two hidden
    layers of about four times the input width (between 128 and 256 units).
    """
    from gananomaly import defaults

    if latent_dim is None:
        latent_dim = defaults.auto_latent_dim(n_features)
    if hidden_dims is None:
        width = defaults.auto_width(n_features)
        hidden_dims = (width, width)
    return {
        "kind": "mlp",
        "n_features": int(n_features),
        "latent_dim": int(latent_dim),
        "hidden_dims": [int(h) for h in hidden_dims],
        "joint": bool(joint),
        "spectral_norm": bool(spectral_norm),
        "dropout": float(dropout),
        "context_dim": int(context_dim),
    }


def _stack(sizes: list[int], *, sn: bool = False, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        layers.append(_sn(lin) if sn else lin)
        layers.append(nn.LeakyReLU(_SLOPE))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """Maps a latent code ``z`` to a sample in (standardised) data space."""

    def __init__(self, latent_dim: int, n_features: int, hidden_dims: list[int]):
        super().__init__()
        self.body = _stack([latent_dim, *hidden_dims])
        self.out = nn.Linear(hidden_dims[-1], n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z))


class MLPEncoder(nn.Module):
    """Maps a sample to the generator's latent space (the inverse of the generator)."""

    def __init__(self, n_features: int, latent_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.body = _stack([n_features, *reversed(hidden_dims)])
        self.out = nn.Linear(hidden_dims[0], latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class MLPDiscriminator(nn.Module):
    """Discriminator whose last hidden layer is exposed as a feature map.

    With ``joint=True`` it judges pairs ``(x, z)`` as in BiGAN/EGBAD/ALAD: separate
    branches for ``x`` and ``z`` are concatenated before the feature layer.
    ``features`` never touches the output layer, so anomaly scores can never be read off
    the final logit or sigmoid.
    """

    def __init__(
        self,
        n_features: int,
        hidden_dims: list[int],
        *,
        latent_dim: int = 0,
        joint: bool = False,
        spectral_norm: bool = False,
        dropout: float = 0.0,
        context_dim: int = 0,
    ):
        super().__init__()
        self.joint = joint
        self.context_dim = context_dim
        if joint:
            half = max(8, hidden_dims[0] // 2)
            self.x_branch = _stack([n_features, hidden_dims[0]], sn=spectral_norm, dropout=dropout)
            self.z_branch = _stack([latent_dim, half], sn=spectral_norm, dropout=dropout)
            self.body = _stack([hidden_dims[0] + half, *hidden_dims[1:]] if len(hidden_dims) > 1
                               else [hidden_dims[0] + half, hidden_dims[0]],
                               sn=spectral_norm, dropout=dropout)
            feat_dim = hidden_dims[-1] if len(hidden_dims) > 1 else hidden_dims[0]
        else:
            self.body = _stack([n_features, *hidden_dims], sn=spectral_norm, dropout=dropout)
            feat_dim = hidden_dims[-1]
        out = nn.Linear(feat_dim, 1)
        self.out = _sn(out) if spectral_norm else out
        self.feature_dim = feat_dim
        if context_dim:
            # Projection discriminator (Miyato & Koyama 2018): the context's embedding is
            # matched against the features, so D must judge x *for its context*; with the
            # context only concatenated to the input, D (and so G) can ignore it.
            embed = nn.Linear(context_dim, feat_dim, bias=False)
            self.embed = _sn(embed) if spectral_norm else embed

    def features(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.joint:
            if z is None:
                raise ValueError("a joint discriminator needs the latent code z")
            return self.body(torch.cat([self.x_branch(x), self.z_branch(z)], dim=1))
        return self.body(x)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x, z)
        out = self.out(h).squeeze(1)
        if self.context_dim:
            out = out + (self.embed(x[:, -self.context_dim:]) * h).sum(1)
        return out


class ConditionalGenerator(nn.Module):
    """Generator conditioned on a known context ``c`` (one-hot), as a conditional GAN.

    It works on *augmented* tensors so the training loop and scoring need no special
    cases: the input is ``[z | c]`` and the output ``[G(z, c) | c]``; the context columns
    pass through untouched and so never contribute to a residual."""

    def __init__(self, inner: nn.Module, latent_dim: int):
        super().__init__()
        self.inner, self.latent_dim = inner, latent_dim

    def forward(self, zc: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(zc), zc[:, self.latent_dim:]], dim=1)


class ConditionalEncoder(nn.Module):
    """Encoder conditioned on the context: ``[x | c] -> [E(x, c) | c]``."""

    def __init__(self, inner: nn.Module, n_features: int):
        super().__init__()
        self.inner, self.n_features = inner, n_features

    def forward(self, xc: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.inner(xc), xc[:, self.n_features:]], dim=1)


def build_networks(spec: dict[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Build ``(generator, discriminator, encoder)`` from an architecture spec."""
    kind = spec.get("kind")
    if kind == "mlp":
        d, k, h = spec["n_features"], spec["latent_dim"], list(spec["hidden_dims"])
        c = int(spec.get("context_dim", 0))
        # With a context, D sees [x | c] (and [z | c] for BiGAN): it judges x against what
        # is normal for that context.
        disc = MLPDiscriminator(
            d + c, h, latent_dim=k + c, joint=spec["joint"],
            spectral_norm=spec["spectral_norm"], dropout=spec["dropout"], context_dim=c,
        )
        if c:
            return (ConditionalGenerator(MLPGenerator(k + c, d, h), k), disc,
                    ConditionalEncoder(MLPEncoder(d + c, k, h), d))
        return MLPGenerator(k, d, h), disc, MLPEncoder(d, k, h)
    if kind == "conv":
        from gananomaly import conv  # image networks live in their own module

        return conv.build_conv_networks(spec)
    raise ValueError(f"unknown network kind {kind!r} in architecture spec")
