"""Training checkpoints: written atomically, loaded without pickles.

A checkpoint is one file, ``checkpoint.pt``, holding the trainer's state (weights,
optimiser moments, RNG states, epochs done, history) and a fingerprint of the data and
parameters. It is saved with ``torch.save`` and read with ``torch.load(weights_only=True)``,
which only rebuilds tensors and plain containers, never arbitrary objects.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from gananomaly._atomic import atomic_open

__all__ = ["CheckpointStore", "tensor_digest", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = 1


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape and bytes."""
    h = hashlib.sha256(repr(tuple(t.shape)).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class CheckpointStore:
    """Saves and loads the trainer state in ``directory`` for one (data, parameters) pair."""

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, Any]):
        self.dir = Path(directory)
        self.fingerprint = fingerprint
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"checkpoint_dir={str(self.dir)!r} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not os.access(self.dir, os.W_OK):
            raise PermissionError(f"checkpoint_dir={str(self.dir)!r} is not writable")

    @property
    def path(self) -> Path:
        return self.dir / CHECKPOINT_NAME

    def save(self, state: dict[str, Any]) -> None:
        payload = {"format": _FORMAT, "fingerprint": self.fingerprint, "state": state}
        with atomic_open(self.path, "wb") as fh:
            torch.save(payload, fh)

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint yet."""
        if not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt or unsafe files
            raise ValueError(f"checkpoint {str(self.path)!r} is corrupt or unsafe and cannot be loaded: "
                             f"{str(exc).splitlines()[0]}") from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT or "state" not in payload:
            raise ValueError(f"{str(self.path)!r} is not a gananomaly training checkpoint")
        saved = payload.get("fingerprint", {})
        if saved != self.fingerprint:
            differ = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            raise ValueError(
                f"checkpoint {str(self.path)!r} was written for different {', '.join(differ)}; "
                "resume with the same data and parameters, or use another checkpoint_dir"
            )
        state = payload["state"]
        for key in ("rng", "torch_rng", "cuda_rng"):  # RNG states must be CPU byte tensors
            if key in state:
                state[key] = state[key].cpu()
        return state
