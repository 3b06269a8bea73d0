"""Where tracked runs go: the MLflow store URI, reaching it, its experiments, and the fallback.

:func:`resolve_tracking_uri` picks the store; :func:`tracking_scope` points MLflow's fluent API at
it for one block; :func:`probe_http` fails fast on a server that is down; :func:`experiment_id`
finds or creates an experiment, with its artifacts beside a local SQLite store
(:func:`artifact_location`) rather than under the working directory. When the store cannot be
reached, :func:`unavailable_error` saves the fitted model to :data:`FALLBACK_DIR` and builds the
:class:`TrackingUnavailableError` that names both.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "DEFAULT_TRACKING_URI",
    "FALLBACK_DIR",
    "ARTIFACTS_DIR",
    "TrackingUnavailableError",
    "artifact_location",
    "experiment_id",
    "is_local_store_error",
    "is_tracking_error",
    "probe_http",
    "resolve_tracking_uri",
    "save_fallback",
    "sqlite_path",
    "tracking_scope",
    "unavailable_error",
]

log = logging.getLogger("gananomaly.tracking")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Where :func:`gananomaly.tracking.tracked_fit` saves a fitted model that could not be logged
#: (relative to the cwd).
FALLBACK_DIR = "gananomaly-untracked"
#: The folder beside a local SQLite store that holds the artifacts of the experiments we create.
ARTIFACTS_DIR = "mlartifacts"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    Parameters
    ----------
    uri : str or None
        An explicit tracking URI (``sqlite:///path.db``, ``http://host:port``, ``file:///dir``).

    Returns
    -------
    str
    """
    if uri:
        return str(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> str | None:
    """The database path of a ``sqlite:///`` URI (relative to the cwd unless absolute), else None."""
    prefix = "sqlite:///"
    return uri[len(prefix):] if uri.startswith(prefix) else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """The artifact location of a new experiment ``experiment`` in the store ``uri``.

    For a SQLite file store: ``<folder of the database>/mlartifacts/<experiment>`` as an absolute
    ``file:`` URI, so the artifacts stay beside the store whichever directory a run starts in
    (MLflow's own default is ``./mlruns`` of the current working directory). Characters other
    than letters, digits, ``-`` and ``_`` in the name become ``_``.
    None (MLflow decides) for every other store: a file store keeps artifacts inside itself and
    a server has its own artifact root.
    """
    db = sqlite_path(uri)
    if db is None or db in ("", ":memory:"):
        return None
    return (Path(db).expanduser().resolve().parent / ARTIFACTS_DIR / _safe_name(experiment, "experiment")).as_uri()


def _safe_name(text: str, empty: str) -> str:
    """``text`` as one file name: anything but letters, digits, ``-`` and ``_`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or empty


class TrackingUnavailableError(ConnectionError):
    """The tracking store could not be reached; the fitted model was saved locally instead.

    Attributes
    ----------
    tracking_uri : str
        The URI that failed.
    model : estimator
        The fitted detector or pipeline (nothing is lost).
    fallback_path : pathlib.Path or None
        The directory the fitted model was saved to (None if saving failed as well).
    """

    def __init__(self, message: str, *, tracking_uri: str, model: Any, fallback_path: Path | None):
        super().__init__(message)
        self.tracking_uri = tracking_uri
        self.model = model
        self.fallback_path = fallback_path


@contextlib.contextmanager
def tracking_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` and restore the caller's settings afterwards.

    ``mlflow.set_tracking_uri`` also writes ``$MLFLOW_TRACKING_URI``; both are restored so a
    tracked fit never changes where the caller's own MLflow calls go.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as _tu

    old_global = getattr(_tu, "_tracking_uri", None)
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def probe_http(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before MLflow's retries with back-off) when an HTTP store's port is closed."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConnectionError(f"cannot connect to MLflow tracking server {uri!r}: {exc}") from exc


def experiment_id(name: str, uri: str) -> str:
    """The id of experiment ``name`` in the current store (``uri``), created when missing.

    A new experiment in a SQLite store gets its artifacts beside the store
    (:func:`artifact_location`); an existing one keeps the location it was created with.
    Unlike ``mlflow.set_experiment`` this leaves the caller's active experiment unchanged.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri, name))
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created concurrently by another process
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {name!r} is deleted in {uri}; restore it (mlflow experiments restore) "
                         "or choose another name")
    return exp.experiment_id


def is_tracking_error(exc: BaseException) -> bool:
    """An error from talking to the store (as opposed to one from the data or the fit)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        # rest_utils wraps transport failures as "API request to <url> failed with [timeout] exception";
        # 502/503/504 come from a proxy in front of a server that is down. A 4xx is a real error.
        return any(s in text for s in ("failed with exception", "failed with timeout exception",
                                       "Max retries exceeded", "Connection refused", "Failed to establish",
                                       "error code 502", "error code 503", "error code 504"))
    return False


def is_local_store_error(exc: BaseException) -> bool:
    """A file-system or database error from opening a local (file or SQLite) store."""
    chain = [exc, exc.__cause__, exc.__context__]
    return any(isinstance(e, OSError) or type(e).__name__ in ("OperationalError", "DatabaseError")
               for e in chain if e is not None)


def save_fallback(model, experiment: str) -> Path | None:
    """Save ``model`` to ``./gananomaly-untracked/<experiment>-<time>-<pid>/``; None if that fails too."""
    from gananomaly.persistence import save

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    safe = _safe_name(experiment, "run")
    root = Path(FALLBACK_DIR)
    try:
        root.mkdir(parents=True, exist_ok=True)
        # a name no other model holds: two fits failing within a second (one process) shared it,
        # and the second save replaced the first model
        for n in itertools.count():
            path = root / f"{safe}-{stamp}-{os.getpid()}{'' if n == 0 else f'-{n}'}"
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        save(model, path)
        return path.resolve()
    except Exception as exc:  # noqa: BLE001 - the caller still gets the model object
        log.error("could not save the fitted model to %s: %s", root, exc)
        return None


def unavailable_error(model, uri: str, experiment: str, exc: BaseException) -> TrackingUnavailableError:
    """Save ``model`` locally and return the error that names ``uri`` and where the model went."""
    path = save_fallback(model, experiment)
    where = (f"the fitted model was saved to {str(path)!r} (load it with gananomaly.load)" if path is not None
             else "saving the fitted model locally failed too; it is available as this error's .model")
    return TrackingUnavailableError(
        f"MLflow tracking store {uri!r} is unreachable ({type(exc).__name__}: {exc}); {where}",
        tracking_uri=uri, model=model, fallback_path=path,
    )
