"""The saved record of a fitted detector: what :meth:`GANAnomalyDetector.save` writes and
:func:`gananomaly.load` restores (through :class:`RecordMixin`, a part of the estimator).

The file format and its checks live in :mod:`gananomaly.model_format`; the atomic directory
writes in :mod:`gananomaly.model_dir`. Only the estimator's own methods (these) read or set
its fitted attributes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from gananomaly import data as _data
from gananomaly import scoring as _scoring
from gananomaly.model_dir import atomic_dir
from gananomaly.model_format import UNSAVED_PARAMS, RecordError, with_tuples, write_detector
from gananomaly.networks import build_networks

__all__ = ["RecordMixin", "NETS"]

# The fitted networks, by attribute; their tensors are saved under the name without "_".
NETS = ("generator_", "discriminator_", "encoder_")
# Parameters that do not change a fitted detector's scores (left out of its fingerprint).
_UNSCORED_PARAMS = frozenset({"verbose", "device", "checkpoint_dir", "checkpoint_every"})


class RecordMixin:
    """Saving and restoring of :class:`~gananomaly.estimator.GANAnomalyDetector`."""

    def save(self, path) -> None:
        """Save to a directory: ``model.safetensors`` (weights) + ``config.json`` (see
        :mod:`gananomaly.persistence`; :func:`gananomaly.load` reads it back)."""
        check_is_fitted(self)
        path = Path(path)
        atomic_dir(path, lambda tmp: self.write_to(tmp, path))

    def write_to(self, out: Path, final: Path) -> str:
        """Write this fitted detector's files into the directory ``out`` (created if needed),
        not atomically: :meth:`save` is the safe way, this is its building block (a pipeline's
        directory holds its detector's files). ``final`` is the model's path, for messages.
        Returns the digest of the written record (a pipeline or pyramid records it)."""
        tensors, record = self._saved_parts()
        return write_detector(out, tensors, record, final, type(self))

    def fingerprint(self) -> str:
        """SHA-256 of everything that decides this fitted detector's scores: every tensor and
        every value :meth:`save` writes (parameters, fitted statistics, offset, threshold),
        except the settings that do not (``verbose``, ``device``, the checkpoint options).
        Equal for the same model in any process, before a save and after a load."""
        check_is_fitted(self)
        tensors, record = self._saved_parts()
        record["params"] = {k: v for k, v in record["params"].items() if k not in _UNSCORED_PARAMS}
        h = hashlib.sha256(json.dumps(record, sort_keys=True, default=repr).encode())
        for name in sorted(tensors):
            t = tensors[name]
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def _saved_parts(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, record): what :meth:`write_to` saves."""
        tensors: dict[str, torch.Tensor] = {}
        for attr in NETS:
            for key, value in getattr(self, attr).state_dict().items():
                tensors[f"{attr[:-1]}.{key}"] = value.detach().to("cpu").contiguous().clone()

        def put(name: str, value: np.ndarray, dtype) -> None:
            tensors[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=dtype))

        put("input.mean", self.input_mean_, np.float64)
        put("input.scale", self.input_scale_, np.float64)
        sc = self.score_config_
        put("score.latent_loc", sc.latent_loc, np.float64)
        put("score.latent_factor", sc.latent_factor, np.float64)
        put("score.knn_bank", sc.knn_bank, np.float32)
        if sc.knn_own is not None:  # absent in models saved before the local k-NN term
            put("score.knn_own", sc.knn_own, np.float32)
        if getattr(self, "training_components_", None) is not None:  # absent in models saved before them
            put("score.train_components", self.training_components_, np.float64)
        if sc.map_scale is not None:
            put("score.map_scale", sc.map_scale, np.float32)
        names = getattr(self, "feature_names_in_", None)
        fitted = {
            "n_features_in_": int(self.n_features_in_),
            "feature_names_in_": None if names is None else [str(n) for n in names],
            "offset_": float(self.offset_),
            "threshold_": getattr(self, "threshold_", None),
            "n_epochs_": int(self.n_epochs_),
            "score_config": {"joint": sc.joint, "n_refine_steps": sc.n_refine_steps, "refine_lr": sc.refine_lr,
                             "kappa": sc.kappa, "loc": sc.loc, "scale": sc.scale},
            "extra": self._extra_record(),
        }
        record = {"params": self._params_record(), "arch": self.arch_, "fitted": fitted, "history": self.history_}
        return tensors, record

    def _params_record(self) -> dict[str, Any]:
        """The parameters as JSON values (live objects such as callbacks are not saved)."""
        params = {}
        for key, value in self.get_params(deep=False).items():
            if key in UNSAVED_PARAMS:
                continue
            if key == "random_state" and not (value is None or isinstance(value, (int, np.integer))):
                value = None  # a RandomState object has no JSON form; the weights are what matter
            if isinstance(value, torch.device):
                value = str(value)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, np.integer):
                value = int(value)
            if isinstance(value, np.floating):
                value = float(value)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if key == "checkpoint_dir":
                value = None  # where this machine kept its checkpoints is not part of the model
            params[key] = value
        return params

    def _extra_record(self) -> dict[str, Any]:
        """Fitted settings beyond the common ones: image shape, objective, fidelity, context."""
        shape = getattr(self, "image_shape_", None)
        extra = {} if shape is None else {"image_shape": [int(v) for v in shape]}
        extra["objective"] = self.objective_
        extra["fidelity"] = {k: float(v) for k, v in getattr(self, "fidelity_", {}).items()}
        if getattr(self, "context_categories_", None) is not None:
            extra["context_categories"] = list(self.context_categories_)
        if getattr(self, "context_mean_", None) is not None:
            extra["context_mean"] = [float(v) for v in self.context_mean_]
            extra["context_scale"] = [float(v) for v in self.context_scale_]
        if getattr(self, "context_names_", None) is not None:
            extra["context_names"] = [str(n) for n in self.context_names_]
        return extra

    @classmethod
    def from_record(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor], device: str):
        """A fitted detector from a saved record (``config.json`` + its tensors) that passed
        the checks of :mod:`gananomaly.model_format` (:func:`gananomaly.load` does both).
        Raises :class:`~gananomaly.model_format.RecordError` naming the key of a value the
        schema allows that the detector refuses."""
        est = cls()
        # checkpoint_dir is not restored: a model file never decides where this process writes
        # (a refit of a loaded model would have written into, and cleaned, the saved path)
        est.set_params(**{k: v for k, v in with_tuples(config["params"]).items() if k != "checkpoint_dir"})
        dev = _data.resolve_device(device)
        arch, fitted = config["arch"], config["fitted"]
        for attr, net in zip(NETS, build_networks(arch)):
            prefix = attr[:-1]
            net.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")},
                                strict=True)
            setattr(est, attr, net.to(dev).eval())
        est.input_mean_ = tensors["input.mean"].numpy().astype(np.float64)
        est.input_scale_ = tensors["input.scale"].numpy().astype(np.float64)
        est.arch_ = arch
        est.n_features_in_ = fitted["n_features_in_"]
        if fitted.get("feature_names_in_") is not None:
            est.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
        est.n_epochs_ = int(fitted.get("n_epochs_", 0))
        est.history_ = config["history"]
        est.device_ = dev
        sc = fitted["score_config"]
        est.score_config_ = _scoring.ScoreConfig(
            joint=sc["joint"], n_refine_steps=sc["n_refine_steps"], refine_lr=float(sc["refine_lr"]),
            kappa=float(sc["kappa"]), batch_size=65536 if dev.type == "cuda" else 8192,
            amp_dtype=_data.resolve_precision(est.precision, dev), context_dim=int(arch.get("context_dim", 0)),
            loc={k: float(v) for k, v in sc["loc"].items()}, scale={k: float(v) for k, v in sc["scale"].items()},
            latent_loc=tensors["score.latent_loc"].numpy().astype(np.float64),
            latent_factor=tensors["score.latent_factor"].numpy().astype(np.float64),
            knn_bank=np.ascontiguousarray(tensors["score.knn_bank"].numpy(), dtype=np.float32),
        )
        if "score.knn_own" in tensors:
            own = np.ascontiguousarray(tensors["score.knn_own"].numpy(), dtype=np.float32)
            # each value follows from the bank: one that does not (a forged tiny or huge one)
            # would blow the local term up or switch it off without a sign
            if not np.allclose(own, _scoring.own_distances(est.score_config_.knn_bank, est.score_config_.knn_k),
                               rtol=1e-3, atol=0.0):
                raise RecordError("score.knn_own", "(the knn bank's own distances) does not match the knn bank it "
                                                   "was computed from; the file was changed after saving")
            est.score_config_.knn_own = own
        if "score.map_scale" in tensors:
            est.score_config_.map_scale = np.ascontiguousarray(tensors["score.map_scale"].numpy(), dtype=np.float32)
        try:
            est._load_extra(fitted.get("extra") or {})
        except ValueError as exc:
            raise RecordError("fitted.extra", f"is invalid ({exc})") from exc
        est._load_threshold(fitted, tensors)
        return est

    def _load_threshold(self, fitted: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if "score.train_components" not in tensors:  # models saved before the training scores were kept
            self.offset_ = float(fitted["offset_"])
            return
        # the threshold is read from the training scores, as after the fit; the recorded
        # offset_ must agree with them
        self.training_components_ = tensors["score.train_components"].numpy().astype(np.float64)
        self.threshold_ = fitted.get("threshold_")
        recorded, derived = float(fitted["offset_"]), float(self.offset_)
        if not abs(recorded - derived) <= 1e-9 * max(1.0, abs(recorded)):
            raise RecordError("fitted.offset_", f"({recorded!r}) does not match the threshold the stored "
                                                f"training scores give ({derived!r})")

    def _load_extra(self, extra: dict[str, Any]) -> None:
        objective = extra.get("objective", self.objective)
        if objective not in ("gan", "wgan-gp"):
            raise ValueError(f"not a valid gananomaly model: bad objective {objective!r}")
        self.objective_ = objective
        fidelity = extra.get("fidelity", {})
        if not (isinstance(fidelity, dict) and len(fidelity) <= 32
                and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in fidelity.items())):
            raise ValueError("not a valid gananomaly model: bad fidelity (a dict of numbers expected)")
        self.fidelity_ = {k: float(v) for k, v in fidelity.items()}
        cats = extra.get("context_categories")
        if cats is not None and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)
                                     and len(cats) == self.arch_.get("context_dim")):
            raise ValueError(f"not a valid gananomaly model: bad context_categories {cats!r}")
        self.context_categories_ = cats
        mean, scale = extra.get("context_mean"), extra.get("context_scale")
        if mean is not None:
            if not (isinstance(mean, list) and isinstance(scale, list) and len(mean) == len(scale)
                    == self.arch_.get("context_dim") and all(isinstance(v, (int, float)) for v in mean + scale)):
                raise ValueError("not a valid gananomaly model: bad context_mean/context_scale")
            self.context_mean_, self.context_scale_ = np.asarray(mean, float), np.asarray(scale, float)
        else:
            self.context_mean_ = self.context_scale_ = None
        names = extra.get("context_names")  # checked by model_format: one per context column
        self.context_names_ = None if names is None else [str(n) for n in names]
        shape = extra.get("image_shape")
        if shape is not None:
            if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
                    and shape[0] in (1, 3) and shape[0] * shape[1] * shape[2] == self.n_features_in_):
                raise ValueError(f"not a valid gananomaly model: bad image_shape {shape!r}")
            if self.arch_["kind"] == "conv" and self.input_mean_.shape != (shape[0],):
                raise ValueError("not a valid gananomaly model: the input scaler does not match the image channels")
        self.image_shape_ = None if shape is None else tuple(shape)

