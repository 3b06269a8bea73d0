"""One dispatch for every observer of a fit: user callbacks, the progress display, checkpoints."""

import numpy as np
import pytest

from gananomaly import GANAnomalyDetector
from gananomaly.callbacks import EVENTS, Callback, Checkpointer, notify

X = np.random.RandomState(0).normal(size=(64, 3))


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_begin(self, estimator, info):
        self.events.append(("on_fit_begin", info["epochs"]))

    def on_epoch_end(self, estimator, logs):
        self.events.append(("on_epoch_end", logs["phase"]))

    def on_train_end(self, estimator):
        self.events.append(("on_train_end", hasattr(estimator, "score_config_")))

    def on_fit_end(self, estimator):
        self.events.append(("on_fit_end", hasattr(estimator, "score_config_")))

    def on_fit_exit(self, estimator):
        self.events.append(("on_fit_exit", None))


def test_events_arrive_in_order_and_the_parameter_is_not_modified():
    rec = Recorder()
    callbacks = (rec,)
    det = GANAnomalyDetector(epochs=2, encoder_epochs=1, batch_size=32, validation_fraction=0, verbose=1,
                             callbacks=callbacks, random_state=0).fit(X)
    assert det.callbacks is callbacks and det.callbacks == (rec,)
    assert rec.events == [("on_fit_begin", 2), ("on_epoch_end", "gan"), ("on_epoch_end", "gan"),
                          ("on_epoch_end", "encoder"), ("on_train_end", False), ("on_fit_end", True),
                          ("on_fit_exit", None)]


def test_a_failing_fit_still_exits_and_never_ends():
    class Boom(Recorder):
        def on_epoch_end(self, estimator, logs):
            super().on_epoch_end(estimator, logs)
            raise RuntimeError("observer failed")

    rec = Boom()
    with pytest.raises(RuntimeError, match="observer failed"):
        GANAnomalyDetector(epochs=2, encoder_epochs=1, batch_size=32, callbacks=[rec], random_state=0).fit(X)
    assert [e for e, _ in rec.events] == ["on_fit_begin", "on_epoch_end", "on_fit_exit"]


def test_checkpointer_counts_epochs_across_a_resume():
    saved = []
    cp = Checkpointer(saved.append, lambda: len(saved), every=3)
    notify([cp], "on_resume", None, {"epochs_done": 2})
    for _ in range(4):
        notify([cp], "on_epoch_end", None, {"phase": "gan"})
    notify([cp], "on_train_end", None)
    assert saved == [0, 1, 2]  # after epochs 3 and 6 (counted from the resumed 2), then the finished state
    with pytest.raises(ValueError, match="unknown callback event"):
        notify([cp], "on_batch_end", None)
    assert EVENTS[0] == "on_fit_begin" and EVENTS[-1] == "on_fit_exit"


def test_a_callback_without_on_epoch_end_is_refused():
    with pytest.raises(TypeError, match="with on_epoch_end"):
        GANAnomalyDetector(epochs=1, callbacks=[object()]).fit(X)
