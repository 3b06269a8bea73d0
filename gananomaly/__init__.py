"""gananomaly: anomaly detection with generative adversarial networks.

The public names are loaded on first use (``import gananomaly`` alone does not import torch),
so the command line answers ``--version`` and ``--help`` at once.
"""

import sys

from gananomaly._version import __version__

__all__ = ["GANAnomalyDetector", "Callback", "load", "__version__"]

# public name -> the library module that defines it
_LAZY = {"GANAnomalyDetector": "estimator", "Callback": "callbacks", "load": "persistence"}
# the library's modules, reachable as attributes after a bare ``import gananomaly``
_SUBMODULES = ("callbacks", "checkpoint", "context", "conv", "data", "defaults", "demo", "distributed",
               "estimator", "explanations", "fidelity", "images", "inspection", "lapgan", "metrics", "mlflow",
               "mlflow_pyfunc", "model_dir", "model_format", "networks", "parzen", "persistence", "record",
               "scoring", "thresholds", "tracking", "tracking_callback", "tracking_log", "tracking_plots",
               "tracking_runs", "tracking_store", "training")


def _module(name: str):
    __import__(f"{__name__}.{name}")
    return sys.modules[f"{__name__}.{name}"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _module(name)
    raise AttributeError(f"module 'gananomaly' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
