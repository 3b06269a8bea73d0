"""Input conversion and device placement."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["resolve_device", "resolve_precision", "to_tensor", "fit_scaler"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    Raises
    ------
    ValueError
        If the string is not a device, or names a CUDA device this machine does not have.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a valid device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision``: ``"auto"`` is bf16 on CUDA and fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


def fit_scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (constant features get scale 1)."""
    mean = X.mean(axis=0, dtype=np.float64)
    scale = X.std(axis=0, dtype=np.float64)
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    return mean, scale


# Rows standardised per step: the float64 intermediate stays small whatever the input size.
_CHUNK_ROWS = 65536


def to_tensor(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """Standardise and convert to a float32 CPU tensor (always a copy: input arrays may be
    read-only memory maps and are never modified). Works in row chunks, so the only full
    copy of the input is the float32 result."""
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        Z = (np.asarray(X[start : start + _CHUNK_ROWS], dtype=np.float64) - mean) / scale
        with np.errstate(over="ignore", invalid="ignore"):
            out[start : start + _CHUNK_ROWS] = Z
        if not np.isfinite(out[start : start + _CHUNK_ROWS]).all():
            raise ValueError(
                "X contains values too large for float32 after standardisation "
                "(absolute value above ~3e38); check the input's units"
            )
    return torch.from_numpy(out)


def read_numeric(path: str):
    """A numeric table from .npy, .npz (first array), .csv or .parquet; a ValueError names
    the file and what is wrong with it."""
    import pandas as pd

    lower = str(path).lower()
    if lower.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return data[data.files[0]]
    if lower.endswith(".csv"):
        df = pd.read_csv(path)
    elif lower.endswith((".parquet", ".pq")):
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"--input {str(path)!r}: unsupported file type (use .npy, .npz, .csv or .parquet)")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"--input {str(path)!r}: non-numeric columns {bad[:5]}; use `gananomaly tabular fit` "
                         "for mixed-type tables")
    return df
