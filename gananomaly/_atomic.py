"""Files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "write_bytes", "fitted_state_kept"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success flush, fsync and rename
    it onto ``path``; on any error (or interrupt) remove it and leave ``path`` untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if "b" not in mode:
            kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and flush it to disk (inside a directory that is
    itself moved into place whole)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fitted_names(obj, private: tuple[str, ...]) -> list[str]:
    return [k for k in vars(obj) if (k.endswith("_") and not k.startswith("__")) or k in private]


@contextlib.contextmanager
def fitted_state_kept(obj, private: tuple[str, ...] = ()) -> Iterator[None]:
    """A fit that raises inside the block leaves ``obj`` as it was: its fitted attributes
    (names ending in ``_``, and ``private``) are restored, and those the fit added removed
    (an unfitted estimator stays unfitted)."""
    before = {k: vars(obj)[k] for k in _fitted_names(obj, private)}
    try:
        yield
    except BaseException:
        for key in _fitted_names(obj, private):
            del vars(obj)[key]
        vars(obj).update(before)
        raise
