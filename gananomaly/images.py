"""Image input for :class:`gananomaly.GANAnomalyDetector`: layout, validation, scaling, resizing.

Image arrays arrive as ``(n, H, W)`` (grey), ``(n, C, H, W)`` or ``(n, H, W, C)`` with
``C`` = 1 or 3. Inside the estimator they are always channel-first ``(n, C, H, W)``:

* the input scaler is per channel (mean and standard deviation over every pixel of the
  training images), so a pixel's value means the same wherever it sits;
* the convolutional networks see square images of side ``arch_["size"]`` (8, 16, 32 or 64 by
  default; see :func:`gananomaly.conv.network_size`): inputs are resized with bilinear
  interpolation (antialiased when shrinking) after scaling;
* ``n_features_in_`` is ``C * H * W`` of the fitted images and ``image_shape_`` is
  ``(C, H, W)``; scoring input must have the same channels and size (the image pipeline
  resizes files for you).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gananomaly.conv import conv_spec, network_size
from gananomaly.data import CONSTANT_RELATIVE, MAX_STANDARDISED, scale_moments

__all__ = [
    "is_image_input",
    "to_channels_first",
    "validate_images",
    "fit_channel_scaler",
    "to_image_tensor",
    "image_arch",
    "resize",
    "score_batch_size",
]


def is_image_input(X: Any) -> bool:
    """True for 3-D and 4-D arrays/tensors (images); DataFrames and 2-D input are not."""
    if hasattr(X, "iloc") or hasattr(X, "tocsr"):  # pandas objects, scipy sparse
        return False
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        if not isinstance(X, (list, tuple)):
            return False
        try:
            ndim = np.ndim(X)
        except ValueError:  # ragged nested lists: let the 2-D validation report them
            return False
    return ndim in (3, 4)


def to_channels_first(X: np.ndarray, channels: str = "auto") -> np.ndarray:
    """View ``X`` as ``(n, C, H, W)``.

    Parameters
    ----------
    X : ndarray of shape (n, H, W), (n, C, H, W) or (n, H, W, C)
    channels : {"auto", "first", "last"}
        Layout of 4-D input. ``"auto"``: axis 1 is the channel axis when its length is 1
        or 3, otherwise axis 3 when its length is 1 or 3.

    Raises
    ------
    ValueError
        When the channel count is not 1 or 3 (or cannot be found with ``"auto"``).
    """
    if X.ndim == 3:
        return X[:, None, :, :]
    if X.ndim != 4:
        raise ValueError(f"image input must be 3-D or 4-D, got shape {X.shape}")
    if channels == "first" or (channels == "auto" and X.shape[1] in (1, 3)):
        out = X
    elif channels == "last" or (channels == "auto" and X.shape[3] in (1, 3)):
        out = np.moveaxis(X, 3, 1)
    else:
        raise ValueError(
            f"cannot find the channel axis of images of shape {X.shape}: neither axis 1 nor axis 3 "
            "has length 1 (grey) or 3 (RGB); pass (n, C, H, W) or (n, H, W, C) with C = 1 or 3"
        )
    if out.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have 1 (grey) or 3 (RGB) channels, got {out.shape[1]} "
            f"(shape {X.shape}, channels={channels!r})"
        )
    return out


def _as_float_array(X: Any) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"image input must be numeric, got dtype {arr.dtype}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(arr), -1).all(axis=1)) if arr.ndim else np.zeros(1, int)
        shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise ValueError(f"Input X contains NaN or infinity: {len(bad)} image(s), at positions {shown} "
                         "(counted from 0)")
    return arr


def validate_images(X: Any, *, channels: str, mlp: bool, fitted_shape: tuple[int, int, int] | None = None,
                    fitted_features: int | None = None, reset: bool) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Validated image input: ``(n, C, H, W)``, or ``(n, C*H*W)`` for MLP networks (``mlp``),
    with the images' ``(C, H, W)``.

    With ``reset=False`` the images must match ``fitted_shape`` (``(C, H, W)`` of the fitted
    images; None for a detector fitted on 2-D data with ``fitted_features`` features), and the
    message names the mismatch. The caller records the shape of a fit itself.
    """
    raw = _as_float_array(X)
    if not reset and fitted_shape is not None and raw.ndim == 4:
        # at scoring the fitted (C, H, W) tells the layout whatever `channels` says: a model
        # fitted channels-first takes (n, H, W, C) and the reverse (the image jobs pass
        # (n, C, H, W) to every model, the pyfunc whatever the client sends)
        fc, fh, fw = fitted_shape
        first, last = raw.shape[1:] == (fc, fh, fw), raw.shape[1:] == (fh, fw, fc)
        if first != last:
            channels = "first" if first else "last"
    arr = to_channels_first(raw, channels)
    n, c, h, w = arr.shape
    if n < (2 if reset else 1):
        raise ValueError(f"Found array with {n} sample(s) (shape={arr.shape}) while a minimum of "
                         f"{2 if reset else 1} is required.")
    if h < 1 or w < 1:
        raise ValueError(f"images must have a positive height and width, got shape {arr.shape}")
    if not reset:
        if fitted_shape is None:
            raise ValueError(
                f"this detector was fitted on 2-D data with {fitted_features} features; "
                f"got an image array of shape {np.shape(X)}"
            )
        fc, fh, fw = fitted_shape
        if c != fc:
            names = {1: "grey", 3: "RGB"}
            raise ValueError(
                f"X has {c} channel(s) ({names[c]}) but this detector was fitted on images with {fc} "
                f"channel(s) ({names[fc]}); convert the images (shape {np.shape(X)}, channels={channels!r})"
            )
        if (h, w) != (fh, fw):
            raise ValueError(
                f"X has images of {h}x{w} pixels but this detector was fitted on {fh}x{fw} images; "
                "resize them first (gananomaly.pipelines.image does this for image files)"
            )
    if mlp:
        return np.ascontiguousarray(arr).reshape(n, c * h * w), (c, h, w)
    return arr, (c, h, w)


def fit_channel_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over all training pixels (a constant channel
    gets scale 1 and a warning; no square overflows, see :func:`gananomaly.data.scale_moments`)."""
    mean, scale, peak = scale_moments(X, (0, 2, 3))
    constant = ~(scale > CONSTANT_RELATIVE * peak) | (peak == 0)
    if constant.any():
        warnings.warn(f"image channel(s) {np.flatnonzero(constant).tolist()} constant over every training pixel "
                      "(scale set to 1); check the training images", UserWarning, stacklevel=5)
    scale[constant] = 1.0
    return mean, scale


def to_image_tensor(X: np.ndarray, mean: np.ndarray, scale: np.ndarray, size: int) -> torch.Tensor:
    """Standardise per channel and resize to ``size x size``; a float32 CPU tensor ``(n, C, size, size)``.

    Each image is resized on its own (bilinear, antialiased when shrinking), so a row's
    tensor never depends on the other rows. Values beyond
    :data:`gananomaly.data.MAX_STANDARDISED` scales are clipped there.
    """
    with np.errstate(over="ignore"):
        Z = (np.asarray(X, dtype=np.float64) - mean[:, None, None]) / scale[:, None, None]
    t = torch.from_numpy(np.ascontiguousarray(Z))
    h, w = t.shape[2:]
    if (h, w) != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=bool(h > size or w > size))
    return t.clamp(-MAX_STANDARDISED, MAX_STANDARDISED).float().contiguous()


def resize(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize channel-first images ``(n, C, h, w)`` to ``hw`` (bilinear, antialiased when shrinking)."""
    h, w = images.shape[2:]
    if (h, w) == tuple(hw):
        return images
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64))
    t = F.interpolate(t, size=tuple(int(v) for v in hw), mode="bilinear", align_corners=False,
                      antialias=bool(h > hw[0] or w > hw[1]))
    return t.numpy()


def image_arch(est: Any, X: np.ndarray) -> dict[str, Any]:
    """Convolutional architecture spec for channel-first images ``X`` and the estimator's parameters."""
    _, c, h, w = X.shape
    size = est.image_size if est.image_size is not None else network_size(h, w)
    if size & (size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {est.image_size!r}")
    width = None
    if est.hidden_dims is not None:
        hd = est.hidden_dims
        if len(hd) == 0 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in hd):
            raise ValueError(f"hidden_dims must be a non-empty tuple of positive ints, got {hd!r}")
        width = int(hd[0])  # conv networks: channels of the first convolution
    return conv_spec(
        c, int(size), est.latent_dim, width,
        joint=est.encoder == "bigan",
        spectral_norm=est.objective_ == "gan",
        dropout=est.dropout,
    )


def score_batch_size(Xt: torch.Tensor, device: torch.device) -> int:
    """Rows per scoring batch for images: a multiple of 64, bounded so conv activations stay
    in memory (4096 images of 16x16, 1024 of 32x32, 256 of 64x64 on CPU; 8x that on CUDA)."""
    pixels = int(Xt.shape[2]) * int(Xt.shape[3])
    per = 64 * max(1, 2**20 // (pixels * 64))
    return per * (8 if device.type == "cuda" else 1)
