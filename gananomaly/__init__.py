"""gananomaly: anomaly detection with generative adversarial networks.

The public names are loaded on first use (``import gananomaly`` alone does not import torch),
so the command line answers ``--version`` and ``--help`` at once.
"""

import importlib

from gananomaly._version import __version__

__all__ = ["GANAnomalyDetector", "Callback", "load", "__version__"]

_LAZY = {"GANAnomalyDetector": "gananomaly.estimator", "Callback": "gananomaly.training",
         "load": "gananomaly.persistence"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    try:  # a submodule, e.g. gananomaly.mlflow after a bare `import gananomaly`
        return importlib.import_module(f"gananomaly.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"gananomaly.{name}":
            raise
    raise AttributeError(f"module 'gananomaly' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
