"""Model directories written whole or not at all.

A model is written under a unique temporary name next to its path and moved into place;
an existing path is replaced only if it is an empty directory or a gananomaly model. On
Linux (``renameat2`` with ``RENAME_EXCHANGE``) the new and the old directory swap places in
one step; elsewhere the old one is moved aside first. See :mod:`gananomaly.persistence`.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from gananomaly._atomic import make_temporary, open_regular, remove_stale_temporaries, set_new_file_mode
from gananomaly.model_format import (
    CONFIG_NAME,
    DETECTOR_DIR,
    FORMAT_NAME,
    LAPGAN_CONFIG,
    MAX_CONFIG_BYTES,
    PIPELINE_CONFIG,
    PREPROCESSING_NAME,
    WEIGHTS_NAME,
)

__all__ = ["atomic_dir", "check_target", "identity", "exchange", "open_files", "open_regular", "OpenFiles"]

def _check_parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not an existing directory")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot save model to {str(path)!r}: {str(parent)!r} is not writable")
    return parent


def _is_model_dir(path: Path) -> bool:
    """Whether the directory ``path`` holds a gananomaly model (detector, pipeline or
    Laplacian pyramid) and nothing else: the only kind of directory :func:`save` replaces."""
    try:
        entries = set(os.listdir(path))
    except OSError:
        return False
    lapgan = {LAPGAN_CONFIG, *(f"level_{k}" for k in range(len(entries)))}
    for layout, marker in (({CONFIG_NAME, WEIGHTS_NAME}, CONFIG_NAME),
                           ({PIPELINE_CONFIG, PREPROCESSING_NAME, DETECTOR_DIR}, PIPELINE_CONFIG),
                           (lapgan, LAPGAN_CONFIG)):
        if marker in entries and entries <= layout:
            try:
                fh = open_regular(path / marker)
                if fh is None:
                    return False
                with fh:
                    doc = json.loads(fh.read(MAX_CONFIG_BYTES))
            except (OSError, ValueError, RecursionError):
                return False
            return isinstance(doc, dict) and doc.get("format") == FORMAT_NAME
    return False


def _check_replaceable(path: Path) -> None:
    if path.is_symlink():
        raise ValueError(f"cannot save model to {str(path)!r}: it is a symbolic link; save to the directory "
                         f"it points to, or remove the link")
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"cannot save model to {str(path)!r}: a file of that name exists and is not a gananomaly "
                         f"model; remove it or choose another path")
    if any(True for _ in os.scandir(path)) and not _is_model_dir(path):
        raise ValueError(f"cannot save model to {str(path)!r}: that directory exists and is not a gananomaly "
                         f"model; refusing to replace it (remove it or choose another path)")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Swap the directories ``a`` and ``b`` in one step; False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # a file system (or kernel) without the exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _install(tmp: Path, path: Path, parent: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``, replacing a model there. Another
    process saving to the same path at the same time may win any step: retry until ours is in."""
    for _ in range(1000):
        try:
            os.rename(tmp, path)  # nothing (or an empty directory) at path: atomic
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        _check_replaceable(path)
        try:
            if exchange(tmp, path):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous model
                return
        except FileNotFoundError:
            continue  # another save moved the old model aside meanwhile
        old = _temporary_dir(path, parent, ".old")
        os.rmdir(old)
        try:
            os.rename(path, old)
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"cannot save model to {str(path)!r}: other processes kept replacing it")


def check_target(path: Path, *, probe: bool = True) -> Path:
    """Raise what a save to ``path`` would raise about the place itself (a missing or
    read-only parent directory, a file, a directory that is neither empty nor a gananomaly
    model); with ``probe``, also create and remove the temporary directory a save starts
    with. Nothing stays written: jobs call it before hours of training. Returns the parent
    directory."""
    path = Path(path)
    parent = _check_parent(path)
    _check_replaceable(path)
    if probe:
        os.rmdir(_temporary_dir(path, parent))
    return parent


def _temporary_dir(path: Path, parent: Path, suffix: str = ".tmp") -> Path:
    tmp = make_temporary(parent, path.name, suffix, directory=True)
    set_new_file_mode(tmp, directory=True)  # a model directory is readable as mkdir would make it
    return tmp


def atomic_dir(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``path`` (replacing a model there)."""
    parent = check_target(path, probe=False)
    remove_stale_temporaries(parent, path.name)  # what saves killed before this one left
    tmp = _temporary_dir(path, parent)
    try:
        write(tmp)
        _install(tmp, path, parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OpenFiles(dict):
    """Open binary handles on files of one save of a model directory, by relative name
    (None: missing); close them with ``with``."""

    def __enter__(self) -> OpenFiles:
        return self

    def __exit__(self, *exc) -> None:
        for fh in self.values():
            if fh is not None:
                fh.close()


def open_files(path: Path, names: tuple[str, ...]) -> OpenFiles | None:
    """Open the files ``names`` (relative to the model directory ``path``) all from one save.

    A save replaces the whole directory and never changes a file in place, and an open file
    stays readable after a later save removes it: when ``path`` is the same directory before
    and after opening, every handle belongs to that one save, however long the reads then take.
    Returns None when ``path`` was replaced meanwhile (open again).
    """
    before = identity(path)
    files = OpenFiles()
    try:
        for name in names:
            files[name] = open_regular(path / name)
    except BaseException:
        files.__exit__()
        raise
    if identity(path) != before:
        files.__exit__()
        return None
    return files
