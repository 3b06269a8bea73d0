"""Observers of a fit, and the one function that notifies them.

A fit announces its events to a list of callbacks through :func:`notify`; the progress
display and checkpointing are callbacks too (:class:`ProgressBar`, :class:`Checkpointer`),
so the training loop has a single way to tell the outside world what happened. The
estimator builds that list for each fit from the user's ``callbacks`` parameter (never
modified) plus the built-in observers its parameters ask for.

Events, in order (every hook receives the estimator first):

* ``on_fit_begin(estimator, info)``: before the first epoch; ``info`` holds ``n_samples``,
  ``n_features``, ``epochs``, ``encoder_epochs``, ``device``.
* ``on_resume(estimator, info)``: a checkpoint was restored; ``info["epochs_done"]`` counts
  the epochs (both phases) it had completed.
* ``on_epoch_end(estimator, logs)``: after every epoch of either phase (see :class:`Callback`).
* ``on_train_end(estimator)``: the networks are trained (scoring statistics not fitted yet).
* ``on_fit_end(estimator)``: the fit succeeded; every fitted attribute is set.
* ``on_fit_exit(estimator)``: the fit is over, successful or not (release resources here).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Callback", "ProgressBar", "Checkpointer", "notify", "check_callbacks", "EVENTS"]

EVENTS = ("on_fit_begin", "on_resume", "on_epoch_end", "on_train_end", "on_fit_end", "on_fit_exit")


class Callback:
    """Observer of a fit. Subclass it and override what you need.

    ``logs`` passed to :meth:`on_epoch_end` holds ``phase`` (``"gan"`` or ``"encoder"``),
    ``epoch`` (0-based within the phase) and the mean losses of that epoch
    (``d_loss``, ``g_loss``, ``e_loss``) plus ``g_std_ratio``, the spread of generated
    samples relative to the training data (near 0 means the generator collapsed).
    """

    def on_fit_begin(self, estimator: Any, info: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def on_resume(self, estimator: Any, info: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def on_epoch_end(self, estimator: Any, logs: dict[str, Any]) -> None:  # pragma: no cover
        pass

    def on_train_end(self, estimator: Any) -> None:  # pragma: no cover
        pass

    def on_fit_end(self, estimator: Any) -> None:  # pragma: no cover
        pass

    def on_fit_exit(self, estimator: Any) -> None:  # pragma: no cover
        pass


def check_callbacks(callbacks: Iterable[Any] | None) -> list[Any]:
    """The user's callbacks as a new list; each must at least observe epochs."""
    out = list(callbacks or ())
    for cb in out:
        if not callable(getattr(cb, "on_epoch_end", None)):
            raise TypeError(f"callbacks must be Callback objects (with on_epoch_end), got {type(cb).__name__}")
    return out


def notify(callbacks: Iterable[Any], event: str, estimator: Any, *args: Any) -> None:
    """Call ``event`` on every callback that defines it (user callbacks may define only some)."""
    if event not in EVENTS:
        raise ValueError(f"unknown callback event {event!r}; known: {EVENTS}")
    for cb in callbacks:
        hook = getattr(cb, event, None)
        if hook is not None:
            hook(estimator, *args)


class _LineProgress:
    """Progress as plain lines on stderr (when it is not a terminal): one about every tenth
    of the epochs, with the latest losses."""

    def __init__(self, total: int):
        self.total, self.done, self.shown, self.postfix = max(1, int(total)), 0, 0, {}

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        if self.done - self.shown >= max(1, self.total // 10) or self.done >= self.total:
            self.shown = self.done
            extra = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            done = f"{min(self.done, self.total)}/{self.total}"
            print(f"gananomaly fit: {done} epochs (GAN and encoder) {extra}".rstrip(), file=sys.stderr, flush=True)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        pass


class ProgressBar(Callback):
    """A tqdm bar over the epochs of both phases on a terminal; plain lines (about ten per
    fit) when stderr is a file or a pipe."""

    def __init__(self, total_epochs: int):
        self.total = int(total_epochs)
        self.bar: Any = None

    def on_fit_begin(self, estimator: Any, info: dict[str, Any]) -> None:
        if getattr(sys.stderr, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="gananomaly fit (GAN and encoder epochs)", disable=None,
                            leave=False)
        else:
            self.bar = _LineProgress(self.total)

    def on_resume(self, estimator: Any, info: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(int(info["epochs_done"]))

    def on_epoch_end(self, estimator: Any, logs: dict[str, Any]) -> None:
        if self.bar is None:
            return
        if logs.get("phase") == "gan":  # this epoch's losses, then the step that shows them
            self.bar.set_postfix(d=f"{logs['d_loss']:.3f}", g=f"{logs['g_loss']:.3f}", refresh=False)
        else:
            self.bar.set_postfix(e=f"{logs['e_loss']:.4f}", refresh=False)
        self.bar.update(1)

    def on_fit_exit(self, estimator: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpointer(Callback):
    """Saves the complete training state every ``every`` epochs (both phases counted) and
    once more when training ends, through ``save(state)``; ``state()`` gives the state.
    Only the first process of a distributed fit writes."""

    def __init__(self, save: Callable[[dict[str, Any]], None], state: Callable[[], dict[str, Any]],
                 every: int, *, rank: int = 0):
        self.save, self.state, self.every, self.rank = save, state, int(every), int(rank)
        self.done = 0

    def on_resume(self, estimator: Any, info: dict[str, Any]) -> None:
        self.done = int(info["epochs_done"])

    def on_epoch_end(self, estimator: Any, logs: dict[str, Any]) -> None:
        self.done += 1
        if self.every and self.done % self.every == 0 and self.rank == 0:
            self.save(self.state())

    def on_train_end(self, estimator: Any) -> None:
        if self.every and self.rank == 0:
            self.save(self.state())  # the finished state: a resume has nothing left to do
