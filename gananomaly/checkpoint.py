"""Training checkpoints: written atomically, verified by a digest, loaded without pickles.

A checkpoint is one file, ``checkpoint.pt``, holding the trainer's state (weights,
optimiser moments, RNG states, epochs done, history) and a fingerprint of the data and
parameters. Its layout is a header line, ``gananomaly-checkpoint 2 sha256=<64 hex digits>``,
then the payload written by ``torch.save``; the digest covers the payload. It is read with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, never
arbitrary objects.

A resume refuses a checkpoint whose digest does not match (a flipped bit would otherwise
resume silently into a different model), one of another format, and one written for other
data or parameters, with a :class:`ValueError` naming the file. Refusing is the safer of the
two choices: starting over instead would quietly discard hours of training on a file that
may only be unreadable for a moment, and the user, told why, can delete the file (the fit
then starts over) or point ``checkpoint_dir`` elsewhere.

Temporary files a killed process left behind (``.checkpoint.pt.*.tmp``) are removed when a
fit opens its checkpoint directory; one fit at a time uses a directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import torch

from gananomaly._atomic import atomic_open, open_regular

__all__ = ["CheckpointStore", "tensor_digest", "read_checkpoint", "recorded_seed", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
# 3: the fidelity that chose the generator kept includes the reverse density (a format-2
# checkpoint's best generator was chosen by another measure, so it is not resumed).
_FORMAT = 3
_MAGIC = b"gananomaly-checkpoint %d sha256=" % _FORMAT
_HEADER_LEN = len(_MAGIC) + 64 + 1  # magic, hex digest, newline


def recorded_seed(directory: str | os.PathLike, default: int) -> int:
    """The seed the checkpoint in ``directory`` was written with (``default`` when there is
    none, or it records none)."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return default
    seed = read_checkpoint(path).get("fingerprint", {}).get("seed")
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else default


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape and bytes."""
    h = hashlib.sha256(repr(tuple(t.shape)).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# Far above what a fit writes (networks at the model format's parameter bound, their Adam moments
# and the best generator kept, in float32): a file larger than this is not read into memory.
MAX_CHECKPOINT_BYTES = 8 * 2**30


def _encode(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    return _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The payload of the checkpoint file ``path`` (``format``, ``fingerprint``, ``state``),
    after its digest has been verified.

    Raises
    ------
    ValueError
        The file is not a gananomaly checkpoint of this format, its digest does not match
        (damaged), or it holds anything but tensors and plain containers.
    """
    path = Path(path)
    fh = open_regular(path)  # a FIFO or a device is refused, not read for ever
    if fh is None:
        if path.is_dir():
            raise ValueError(f"{str(path)!r} is a directory, not a checkpoint file; remove it or use another "
                             "checkpoint_dir")
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"checkpoint {str(path)!r} is {size} bytes, more than any fit writes "
                             f"({MAX_CHECKPOINT_BYTES}); delete it to start the fit over, or use another "
                             "checkpoint_dir")
        data = fh.read()
    if not data.startswith(_MAGIC) or data[_HEADER_LEN - 1 : _HEADER_LEN] != b"\n":
        older = data.startswith(b"PK") or data.startswith(b"gananomaly-checkpoint ")
        raise ValueError(
            f"{str(path)!r} is not a gananomaly training checkpoint of format {_FORMAT}"
            + (" (it was written by another gananomaly version)" if older else "")
            + "; delete it to start the fit over, or use another checkpoint_dir"
        )
    recorded = data[len(_MAGIC) : _HEADER_LEN - 1].decode("ascii", "replace")
    body = memoryview(data)[_HEADER_LEN:]
    actual = hashlib.sha256(body).hexdigest()
    if actual != recorded:
        raise ValueError(
            f"checkpoint {str(path)!r}: checksum mismatch (it records SHA-256 {recorded[:16]}..., its contents "
            f"have {actual[:16]}...): the file was damaged or changed after it was written; delete it to start "
            f"the fit over, or use another checkpoint_dir"
        )
    try:
        payload = torch.load(io.BytesIO(body), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for corrupt or unsafe files
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or unsafe and cannot be loaded: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT or not isinstance(payload.get("state"), dict):
        raise ValueError(f"{str(path)!r} is not a gananomaly training checkpoint")
    return payload


# Age after which a checkpoint's temporary file is a dead process's (a write takes seconds).
STALE_TEMPORARY_S = 15 * 60


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
        # left by a process killed mid-write; a write in flight (another fit on this directory)
        # is seconds old and is left alone: removing it made that fit fail at its rename
        now = time.time()
        for stale in self.dir.glob(f".{CHECKPOINT_NAME}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - stale.stat().st_mtime > STALE_TEMPORARY_S:
                    stale.unlink(missing_ok=True)

    @property
    def path(self) -> Path:
        return self.dir / CHECKPOINT_NAME

    def save(self, state: dict[str, Any]) -> None:
        data = _encode({"format": _FORMAT, "fingerprint": self.fingerprint, "state": state})
        with atomic_open(self.path, "wb") as fh:
            fh.write(data)

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state, or None when there is no checkpoint yet."""
        if not self.path.exists():
            return None
        payload = read_checkpoint(self.path, device)
        saved = payload.get("fingerprint", {})
        if not isinstance(saved, dict):
            raise ValueError(f"{str(self.path)!r} is not a gananomaly training checkpoint")
        if saved != self.fingerprint:
            differ = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            raise ValueError(
                f"checkpoint {str(self.path)!r} was written for different {', '.join(differ)}; "
                "resume with the same data, parameters and random_state, or use another checkpoint_dir"
            )
        state = payload["state"]
        for key in ("rng", "torch_rng", "cuda_rng"):  # RNG states must be CPU byte tensors
            if key in state:
                state[key] = state[key].cpu()
        return state
