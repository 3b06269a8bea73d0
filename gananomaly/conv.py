"""DCGAN-style convolutional generator, discriminator and encoder for image input.

The networks work on square images of side ``size`` (a power of two, at least 8) with
``channels`` colour channels, in channel-first layout ``(n, C, size, size)``. The
estimator resizes its input to that side (see :class:`gananomaly.GANAnomalyDetector`).

* Generator: ``z`` -> linear -> ``(c, 4, 4)`` -> strided transposed convolutions (each
  doubles the side, halves the channels) -> ``(C, size, size)``; batch norm after every hidden
  layer, linear output (the data are standardised, not squashed into [-1, 1]).
* Discriminator: strided convolutions (each halves the side, doubles the channels) down to
  ``4 x 4``; the flattened ``(c, 4, 4)`` map is the feature layer used by the
  discriminator score; a linear layer gives the logit. Spectral normalisation on every layer
  for ``objective="gan"``; never batch norm (a WGAN-GP critic must treat samples
  independently, and feature matching must not depend on the batch). For BiGAN the
  discriminator judges ``(x, z)`` pairs: the convolutional ``x`` branch and an MLP ``z``
  branch meet in a joint hidden layer, which is then the feature layer.
* Encoder: the discriminator's convolutional stack with batch norm, then a linear map to
  the latent space.

Every network is built from a JSON-serialisable spec (:func:`conv_spec`) so a saved model
rebuilds exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

__all__ = [
    "ConvGenerator",
    "ConvDiscriminator",
    "ConvEncoder",
    "conv_spec",
    "build_conv_networks",
    "network_size",
    "SIZES",
]

_SLOPE = 0.2
# The sides the estimator resizes image input to (the smallest one that holds the input,
# capped at the largest); the networks accept any power of two from 8 up.
SIZES = (8, 16, 32, 64)


def network_size(height: int, width: int) -> int:
    """Side of the square images the networks see for an input of ``height x width``.

    The smallest of 8, 16, 32, 64 that is at least ``max(height, width)``; 64 for anything
    larger (large images are downsampled: GAN detectors on CPU train in reasonable time only
    at small resolutions; resize beforehand, or pass ``image_size``, to choose otherwise).
    """
    side = max(int(height), int(width))
    for s in SIZES:
        if side <= s:
            return s
    return SIZES[-1]


def _levels(size: int) -> int:
    """Number of stride-2 stages between ``4 x 4`` and ``size x size``."""
    levels = int(round(math.log2(size))) - 2
    if size < 8 or 2 ** (levels + 2) != size:
        raise ValueError(f"image size must be a power of two >= 8, got {size}")
    return levels


def conv_spec(
    channels: int,
    size: int,
    latent_dim: int | None = None,
    width: int | None = None,
    *,
    joint: bool = False,
    spectral_norm: bool = False,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """Architecture spec of the convolutional networks.

    Parameters
    ----------
    channels : int
        1 (grey) or 3 (RGB).
    size : int
        Side of the (square) images, a power of two >= 8.
    latent_dim : int or None
        None: the image side, between 16 and 64 (16 for 8 x 8 and 16 x 16 images).
    width : int or None
        Channels of the first convolution (doubling at every stage towards ``4 x 4``).
        None: 64 for 8 x 8 images (a single stage), 32 for 16 x 16, 16 for 32 x 32 and
        larger (twice the training speed of 32 at 32 x 32, no loss of AUROC on the texture
        task: benchmarks/IMAGES.md).
    joint : bool
        BiGAN discriminator on ``(x, z)`` pairs.
    spectral_norm : bool
        Spectral normalisation on every discriminator layer.
    dropout : float
        Dropout after every discriminator hidden layer (training only).
    """
    _levels(size)
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if latent_dim is None:
        latent_dim = int(min(64, max(16, size)))
    if width is None:
        width = 64 if size <= 8 else (16 if size >= 32 else 32)
    return {
        "kind": "conv",
        "channels": int(channels),
        "size": int(size),
        "latent_dim": int(latent_dim),
        "width": int(width),
        "joint": bool(joint),
        "spectral_norm": bool(spectral_norm),
        "dropout": float(dropout),
    }


def _stage_channels(width: int, levels: int) -> list[int]:
    """Channels from the largest resolution down to ``4 x 4`` (doubling, capped at 512)."""
    return [min(512, width * 2**i) for i in range(levels)]


class ConvGenerator(nn.Module):
    """Maps ``z`` of shape ``(n, latent_dim)`` to images ``(n, channels, size, size)``."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int):
        super().__init__()
        levels = _levels(size)
        chans = _stage_channels(width, levels)[::-1]  # 4x4 first
        self.base = chans[0]
        self.project = nn.Sequential(
            nn.Linear(latent_dim, chans[0] * 16, bias=False),
            nn.BatchNorm1d(chans[0] * 16),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for i in range(levels - 1):
            layers += [
                nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            ]
        layers.append(nn.ConvTranspose2d(chans[-1], channels, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(z.shape[0], self.base, 4, 4))


def _conv_stack(channels: int, chans: list[int], *, sn: bool, bn: bool, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = channels
    for i, cout in enumerate(chans):
        conv = nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=not (bn and i > 0))
        layers.append(_sn(conv) if sn else conv)
        if bn and i > 0:  # DCGAN: no batch norm on the layer that reads the image
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(_SLOPE))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        cin = cout
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Maps images ``(n, channels, size, size)`` to latent codes ``(n, latent_dim)``."""

    def __init__(self, channels: int, size: int, latent_dim: int, width: int):
        super().__init__()
        chans = _stage_channels(width, _levels(size))
        self.body = _conv_stack(channels, chans, sn=False, bn=True, dropout=0.0)
        self.out = nn.Linear(chans[-1] * 16, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x).flatten(1))


class ConvDiscriminator(nn.Module):
    """Convolutional discriminator whose inner feature map is exposed by :meth:`features`.

    ``features(x)`` is the flattened ``4 x 4`` map of the last convolution (for a joint
    BiGAN discriminator: the joint hidden layer over the ``x`` and ``z`` branches);
    ``forward`` adds the output logit, which the anomaly scores never read.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        width: int,
        *,
        latent_dim: int = 0,
        joint: bool = False,
        spectral_norm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        chans = _stage_channels(width, _levels(size))
        self.joint = joint
        self.body = _conv_stack(channels, chans, sn=spectral_norm, bn=False, dropout=dropout)
        conv_dim = chans[-1] * 16

        def lin(i: int, o: int) -> nn.Module:
            layer = nn.Linear(i, o)
            return _sn(layer) if spectral_norm else layer

        if joint:
            z_dim = max(64, 2 * latent_dim)
            hidden = max(256, conv_dim // 2)
            self.z_branch = nn.Sequential(lin(latent_dim, z_dim), nn.LeakyReLU(_SLOPE))
            joint_layers: list[nn.Module] = [lin(conv_dim + z_dim, hidden), nn.LeakyReLU(_SLOPE)]
            if dropout > 0:
                joint_layers.append(nn.Dropout(dropout))
            self.joint_layer = nn.Sequential(*joint_layers)
            self.feature_dim = hidden
        else:
            self.feature_dim = conv_dim
        self.out = lin(self.feature_dim, 1)

    def features(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Inner features ``(n, feature_dim)`` of ``x`` (and ``z`` for a joint discriminator)."""
        h = self.body(x).flatten(1)
        if self.joint:
            if z is None:
                raise ValueError("a joint discriminator needs the latent code z")
            h = self.joint_layer(torch.cat([h, self.z_branch(z)], dim=1))
        return h

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.features(x, z)).squeeze(1)


def build_conv_networks(spec: dict[str, Any]) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Build ``(generator, discriminator, encoder)`` from a ``kind="conv"`` spec."""
    c, s, k, w = int(spec["channels"]), int(spec["size"]), int(spec["latent_dim"]), int(spec["width"])
    _levels(s)
    if c not in (1, 3) or k < 1 or w < 1:
        raise ValueError(f"bad conv architecture: channels={c}, latent_dim={k}, width={w}")
    gen = ConvGenerator(k, c, s, w)
    disc = ConvDiscriminator(c, s, w, latent_dim=k, joint=bool(spec["joint"]),
                             spectral_norm=bool(spec["spectral_norm"]), dropout=float(spec["dropout"]))
    enc = ConvEncoder(c, s, k, w)
    return gen, disc, enc
