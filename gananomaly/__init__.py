"""gananomaly: anomaly detection with generative adversarial networks."""

from gananomaly._version import __version__
from gananomaly.estimator import GANAnomalyDetector
from gananomaly.persistence import load
from gananomaly.training import Callback

__all__ = ["GANAnomalyDetector", "Callback", "load", "__version__"]
