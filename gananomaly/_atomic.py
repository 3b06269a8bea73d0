"""Files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "write_bytes", "fitted_state_kept", "new_file_mode", "set_new_file_mode", "make_temporary",
           "remove_stale_temporaries", "open_regular"]

# Temporary siblings of an output: ".<name>.<host>-<pid>-<random><suffix>", the name cut so that
# any name the system allows stays allowed; what a killed process left is found by its owner.
_TMP_NAME_CHARS = 64
_STALE_FOREIGN_S = 24 * 3600
# A temporary of a process of this machine that is gone is removed once this old: processes in
# other PID namespaces (containers sharing the host name and the directory) look gone too, and
# no save or output assembly runs this long.
_STALE_OWN_S = 15 * 60


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike | None = None, *, directory: bool = False) -> int:
    """The permissions a file (or directory) written in place of ``path`` gets: those of the
    file already there, else what ``open``/``mkdir`` would give (0o666 / 0o777 less the umask).
    Temporary files are created private (0o600 / 0o700), so a finished output or model would
    otherwise be readable by its owner only."""
    if path is not None:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            pass
    return (0o777 if directory else 0o666) & ~_umask()


def set_new_file_mode(tmp: str | os.PathLike, path: str | os.PathLike | None = None, *,
                      directory: bool = False) -> None:
    """Give the temporary ``tmp`` the permissions of :func:`new_file_mode` before it is moved
    onto ``path``; best effort (some mounts refuse chmod: the file then keeps what they give)."""
    with contextlib.suppress(OSError):
        os.chmod(tmp, new_file_mode(path, directory=directory))


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _temporary_prefix(name: str) -> str:
    return f".{name[:_TMP_NAME_CHARS]}."


def make_temporary(parent: str | os.PathLike, name: str, suffix: str = ".tmp", *, directory: bool = False) -> Path:
    """Create (empty) a private temporary file or directory in ``parent`` for the output
    ``name``, named so that :func:`remove_stale_temporaries` can tell its owner."""
    prefix = f"{_temporary_prefix(name)}{_host_tag()}-{os.getpid()}-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.close(fd)
    return Path(tmp)


def remove_stale_temporaries(parent: str | os.PathLike, name: str) -> list[str]:
    """Remove the temporaries of ``name`` in ``parent`` (:func:`make_temporary`) that a killed
    process left: one of a process of this machine that is gone, or of another machine (a
    shared file system) and a day old. A running process's own stay. Returns what went."""
    import shutil
    import time

    prefix, host = _temporary_prefix(name), _host_tag()
    removed = []
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        tag, _, rest = entry.name[len(prefix):].partition("-")
        pid_text = rest.partition("-")[0]
        if len(tag) != len(host) or not all(c in "0123456789abcdef" for c in tag) or not pid_text.isdigit():
            continue
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if tag == host and os.name == "posix":
            if age < _STALE_OWN_S or _alive(int(pid_text)):
                continue
        elif age < _STALE_FOREIGN_S:  # another machine's (or no way to ask about a process)
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        if not os.path.lexists(entry.path):
            removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (POSIX: signal 0); True when unsure."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or an impossible pid: left alone
    return True


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success flush, fsync and rename
    it onto ``path``; on any error (or interrupt) remove it and leave ``path`` untouched. The
    file keeps the permissions of the one it replaces (a new one: the umask's)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):  # best effort, as set_new_file_mode
            os.fchmod(fd, new_file_mode(path))
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


def open_regular(path: str | os.PathLike):
    """``path`` opened for binary reading; None when it does not exist (or is a directory).

    Raises
    ------
    ValueError
        ``path`` is a FIFO, a device or a socket: opening a FIFO blocks until a writer comes,
        forever (it is opened without blocking and refused before any read).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            os.close(fd)
            return None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{str(path)!r} is not a regular file (a FIFO, a device or a socket)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
