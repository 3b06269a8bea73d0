"""The ``gananomaly`` MLflow model flavor.

A logged model is an MLflow model directory::

    MLmodel                  flavors: gananomaly (this module) and python_function
    model/                   gananomaly.persistence.save output (safetensors + JSON;
                             a pipeline's preprocessing as skops with an allow-list)
    input_example.json, requirements.txt, python_env.yaml, conda.yaml

Nothing is pickled: loading reads JSON, safetensors and allow-listed skops only. The flavor's
``data`` must name a directory inside the model directory (an absolute path, ``..`` or a link
leading elsewhere is refused), and the flavor records the SHA-256 of the weights
(``weights_sha256``), which loading compares with the model's ``config.json`` before
:func:`gananomaly.persistence.load` checks the file itself against it.

As a pyfunc (``mlflow.pyfunc.load_model(uri).predict(df)``, and ``mlflow models serve``) the
model returns a DataFrame with one row per input row and the columns

* ``discriminator``, ``reconstruction``, ``latent``, ``knn``, ``combined``: the anomaly scores of
  :meth:`GANAnomalyDetector.score_components` (higher = more anomalous);
* ``score``: :meth:`GANAnomalyDetector.score_samples` (higher = more normal);
* ``label``: :meth:`GANAnomalyDetector.predict` (+1 inlier, -1 outlier);
* on request, ``predict(df, params={"explain": K})`` (table models): ``explain_1_column``,
  ``explain_1_contribution``, ... ``explain_K_contribution``, each row's K most responsible
  input columns (per original column for a pipeline, per feature for a bare detector). The
  signature declares ``explain`` (integer, default None), so ``mlflow models serve`` accepts it.

The pyfunc itself (``predict``, its input handling and signature) lives in
:mod:`gananomaly.mlflow_pyfunc`; this module saves, logs and loads, and keeps ``_load_pyfunc``
because every saved ``MLmodel`` names ``gananomaly.mlflow`` as its loader module. (A little over
400 lines: saving and loading check each other's records, the flavor's ``data``, ``format``,
``model_kind`` and weights digest, so they stay in one module.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from gananomaly.estimator import SCORE_COLUMNS
from gananomaly.mlflow_pyfunc import (
    GANAnomalyPyfunc,
    example_frame,
    infer_pyfunc_signature,
    input_columns,
    score_frame,  # noqa: F401 - re-exported: gananomaly.mlflow.score_frame
    split_model,
)

__all__ = ["FLAVOR_NAME", "OUTPUT_COLUMNS", "MODEL_CARD", "model_card", "get_default_pip_requirements", "save_model",
           "log_model", "load_model"]

FLAVOR_NAME = "gananomaly"
_FORMAT = "safetensors+json"
OUTPUT_COLUMNS = SCORE_COLUMNS  # the estimator's one scoring output
_MODEL_DIR = "model"


def get_default_pip_requirements() -> list[str]:
    """Pinned requirements of a saved model: gananomaly and what loading and scoring import.

    Returns
    -------
    list of str
    """
    from importlib.metadata import PackageNotFoundError, version

    from gananomaly._version import __version__

    reqs = [f"gananomaly=={__version__}"]
    for package in ("torch", "numpy", "pandas", "scikit-learn", "safetensors", "skops"):
        try:
            # Drop a local label such as "+cpu": pip resolves the public release from it.
            reqs.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(package)
    return reqs


MODEL_CARD = "MODEL_CARD.md"


def model_card(model) -> str:
    """A short Markdown description of a fitted model, written beside it in an MLflow model
    directory: input columns, training size, what the generator learned, the threshold."""
    prep, det = split_model(model)
    columns = input_columns(model)
    if columns is None and prep is None:
        columns = [str(n) for n in getattr(det, "feature_names_in_", [])] or None
    shape = getattr(det, "image_shape_", None)
    pinned = getattr(det, "threshold_", None)
    rule = f"pinned: {pinned}" if pinned else f"contamination={det.contamination}"
    lines = ["# gananomaly model", "",
             "A GAN anomaly detector (scikit-learn `OutlierMixin` contract): `score_samples` higher = more "
             "normal, `predict` +1 inlier / -1 outlier.", "",
             f"- Input: {'images ' + 'x'.join(map(str, shape)) + ' (C x H x W)' if shape is not None else ''}"
             f"{(str(len(columns)) + ' columns: ' + ', '.join(f'`{c}`' for c in columns)) if columns else ''}"
             f"{'' if shape is not None or columns else str(det.n_features_in_) + ' unnamed features'}",
             f"- Preprocessing: {'a scikit-learn pipeline before the detector' if prep is not None else 'none'}",
             f"- Networks: {det.arch_.get('kind')} ({det.objective_ if hasattr(det, 'objective_') else ''} "
             f"objective, {det.encoder} encoder), {int(getattr(det, 'n_epochs_', 0))} GAN epochs trained",
             f"- Score: `{det.component}` (weight {det.weight}, latent_weight {det.latent_weight}, "
             f"knn_weight {det.knn_weight})",
             f"- Threshold (`offset_` on `score_samples`): {float(det.offset_):.6g} ({rule})"]
    context = getattr(det, "context_names_", None)
    if context:
        cats = getattr(det, "context_categories_", None)
        lines.insert(lines.index(next(x for x in lines if x.startswith("- Preprocessing"))),
                     f"- Context (each row is judged against what is normal for it): "
                     f"{', '.join(f'`{c}`' for c in context)}"
                     + (f" (categories {', '.join(map(str, cats[:20]))}{', ...' if len(cats) > 20 else ''})"
                        if cats is not None else " (numbers)"))
    fidelity = getattr(det, "fidelity_", None) or {}
    if fidelity:
        lines.append("- Generator fidelity on held-out normal rows: " + ", ".join(
            f"{k} {fidelity[k]:.3g}" for k in ("fidelity", "coverage", "density", "reverse_density", "parzen_gap")
            if k in fidelity))
    history = getattr(det, "history_", {}) or {}
    if history.get("d_loss"):
        lines.append(f"- Final losses: d_loss {history['d_loss'][-1]:.4g}, g_loss {history['g_loss'][-1]:.4g}")
    return "\n".join(lines) + "\n"


def save_model(
    model,
    path: str | os.PathLike,
    *,
    signature=None,
    input_example=None,
    pip_requirements: list[str] | str | None = None,
    extra_pip_requirements: list[str] | str | None = None,
    mlflow_model=None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Save a fitted detector (or pipeline ending in one) as an MLflow model directory.

    Parameters
    ----------
    model : fitted GANAnomalyDetector or Pipeline ending in one
    path : str or path-like
        Destination; must not exist or be an empty directory.
    signature : mlflow.models.ModelSignature, optional
        Default: inferred from ``input_example`` and the pyfunc output. ``False``: none.
    input_example : DataFrame or array, optional
        A few input rows, stored with the model.
    pip_requirements, extra_pip_requirements : list of str or path, optional
        Default: :func:`get_default_pip_requirements` (gananomaly pinned to this version).
    mlflow_model : mlflow.models.Model, optional
        The model description to add the flavors to (used by :func:`log_model`).
    metadata : dict, optional
        Free-form metadata written to ``MLmodel``.
    """
    from mlflow.models import Model
    from mlflow.utils.environment import _validate_env_arguments
    from mlflow.utils.model_utils import _validate_and_prepare_target_save_path
    from sklearn.utils.validation import check_is_fitted

    _, det = split_model(model)
    check_is_fitted(det)
    _refuse_context(model)
    _validate_env_arguments(None, pip_requirements, extra_pip_requirements)
    path = os.path.abspath(os.fspath(path))
    existed = os.path.isdir(path)
    _validate_and_prepare_target_save_path(path)  # refuses a non-empty directory
    mlflow_model = Model() if mlflow_model is None else mlflow_model
    try:
        _describe(mlflow_model, model, path, signature=signature, input_example=input_example, metadata=metadata)
        _save_model(model, path, mlflow_model)
        _write_environment(path, pip_requirements, extra_pip_requirements)
    except BaseException:
        # nothing half-written: the directory is left as it was (empty, or not there), so a retry works
        for entry in os.listdir(path):
            target = os.path.join(path, entry)
            shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.unlink(target)
        if not existed:
            os.rmdir(path)
        raise


def _describe(mlflow_model, model, path: str, *, signature, input_example, metadata) -> None:
    """Store the input example in ``path`` and set the signature (inferred from the example and
    the pyfunc output unless given; ``False``: none) and the metadata on ``mlflow_model``."""
    from mlflow.models.utils import _save_example

    example = example_frame(model, input_example)
    if example is not None:
        _save_example(mlflow_model, example, path)
    if signature is None and example is not None:
        try:
            signature = infer_pyfunc_signature(model, example)
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"input_example does not score with this model: {exc}") from exc
    elif signature is False:
        signature = None
    if signature is not None:
        mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata


def _save_model(model, path: str, mlflow_model) -> None:
    """Write the model directory, the model card and ``MLmodel`` with both flavors."""
    from mlflow import pyfunc
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.utils.environment import _CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME
    from mlflow.utils.file_utils import write_to
    from sklearn.pipeline import Pipeline

    from gananomaly import persistence
    from gananomaly._version import __version__

    persistence.save(model, Path(path) / _MODEL_DIR)
    write_to(os.path.join(path, MODEL_CARD), model_card(model))
    pyfunc.add_to_model(
        mlflow_model,
        loader_module="gananomaly.mlflow",
        data=_MODEL_DIR,
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
    )
    mlflow_model.add_flavor(
        FLAVOR_NAME,
        gananomaly_version=__version__,
        data=_MODEL_DIR,
        format=_FORMAT,
        model_kind="pipeline" if isinstance(model, Pipeline) else "detector",
        output_columns=list(OUTPUT_COLUMNS),
        weights_sha256=persistence.recorded_digest(Path(path) / _MODEL_DIR),
    )
    mlflow_model.save(os.path.join(path, MLMODEL_FILE_NAME))


def _write_environment(path: str, pip_requirements, extra_pip_requirements) -> None:
    """``conda.yaml``, ``requirements.txt`` (and constraints), ``python_env.yaml`` in ``path``."""
    import yaml
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _CONSTRAINTS_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _generate_mlflow_version_pinning,
        _mlflow_conda_env,
        _process_pip_requirements,
        _PythonEnv,
    )
    from mlflow.utils.file_utils import write_to

    if pip_requirements is None and extra_pip_requirements is None:
        # Our own pins come from the running environment, so MLflow's mismatch check (which
        # scans every installed distribution, seconds on a busy machine) has nothing to find.
        pip_reqs = [_generate_mlflow_version_pinning()] + get_default_pip_requirements()
        pip_constraints: list[str] = []
        conda_env = _mlflow_conda_env(additional_pip_deps=pip_reqs, install_mlflow=False)
    else:
        default_reqs = get_default_pip_requirements() if pip_requirements is None else None
        conda_env, pip_reqs, pip_constraints = _process_pip_requirements(
            default_reqs, pip_requirements, extra_pip_requirements
        )
    with open(os.path.join(path, _CONDA_ENV_FILE_NAME), "w") as fh:
        yaml.safe_dump(conda_env, stream=fh, default_flow_style=False)
    if pip_constraints:
        write_to(os.path.join(path, _CONSTRAINTS_FILE_NAME), "\n".join(pip_constraints))
    write_to(os.path.join(path, _REQUIREMENTS_FILE_NAME), "\n".join(pip_reqs))
    _PythonEnv.current().to_yaml(os.path.join(path, _PYTHON_ENV_FILE_NAME))


def log_model(
    model,
    name: str = "model",
    *,
    registered_model_name: str | None = None,
    input_example=None,
    signature=None,
    pip_requirements: list[str] | str | None = None,
    extra_pip_requirements: list[str] | str | None = None,
    metadata: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
):
    """Log a fitted detector (or pipeline) as a LoggedModel of the active run (one is started if none).

    Parameters
    ----------
    model : fitted GANAnomalyDetector or Pipeline ending in one
    name : str, default="model"
        The model's name in the run.
    registered_model_name : str, optional
        Also register it as a new version of this registered model.
    input_example, signature, pip_requirements, extra_pip_requirements, metadata
        As :func:`save_model`.
    params, tags : dict, optional
        Recorded on the LoggedModel.

    Returns
    -------
    mlflow.models.model.ModelInfo
        ``model_info.model_uri`` is ``models:/<model_id>``.
    """
    import sys

    from mlflow.models import Model

    _refuse_context(model)  # before MLflow records a LoggedModel
    return Model.log(
        name=name,
        artifact_path=None,
        flavor=sys.modules[__name__],
        registered_model_name=registered_model_name,
        model=model,
        input_example=input_example,
        signature=signature,
        pip_requirements=pip_requirements,
        extra_pip_requirements=extra_pip_requirements,
        metadata=metadata,
        params=params,
        tags=tags,
    )


def _not_a_model(uri: str, why: str):
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(f"cannot load a gananomaly model from {uri!r}: {why}", error_code=INVALID_PARAMETER_VALUE)


def load_model(model_uri: str, dst_path: str | None = None, *, device: str = "auto"):
    """Load a model saved or logged with this flavor.

    Parameters
    ----------
    model_uri : str
        ``models:/<model_id>``, ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
        ``runs:/<run_id>/model`` or a local path.
    dst_path : str, optional
        Where to download the artifacts (default: a temporary directory).
    device : str, default="auto"
        Where to place the networks.

    Returns
    -------
    GANAnomalyDetector or Pipeline

    Raises
    ------
    mlflow.exceptions.MlflowException
        Nothing at ``model_uri``, or it is not a gananomaly model; the message names the URI.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    from gananomaly import persistence

    uri = str(model_uri)
    try:
        local = _download_artifact_from_uri(artifact_uri=uri, output_path=dst_path)
    except MlflowException as exc:
        raise _not_a_model(uri, exc.message) from exc
    except OSError as exc:
        raise _not_a_model(uri, f"{type(exc).__name__}: {exc}") from exc
    conf = _flavor_conf(uri, local)
    try:
        return persistence.load(_checked_data_dir(local, conf), device=device)
    except (FileNotFoundError, ValueError) as exc:
        raise _not_a_model(uri, str(exc)) from exc


def _checked_data_dir(root: str | os.PathLike, conf: dict[str, Any]) -> Path:
    """The model directory the flavor ``conf`` of the MLflow model at ``root`` names, once it
    is known to lie inside ``root`` and to match what the flavor records.

    Raises
    ------
    ValueError
        The flavor's ``data`` leads outside ``root`` or is not a string, its ``format`` or
        ``model_kind`` is not what is on disk, or its ``weights_sha256`` differs from the one the
        model's ``config.json`` records.
    """
    from gananomaly import persistence

    data = conf.get("data", _MODEL_DIR)
    if not isinstance(data, str) or not data or os.path.isabs(data):
        raise ValueError(f"the MLmodel flavor {FLAVOR_NAME!r} key 'data' must be a relative path inside the model "
                         f"directory, got {data!r}")
    base = Path(root).resolve()
    target = (base / data).resolve()
    if target == base or not target.is_relative_to(base):
        raise ValueError(f"the MLmodel flavor {FLAVOR_NAME!r} key 'data' ({data!r}) leads outside the model "
                         f"directory {str(base)!r}")
    if conf.get("format", _FORMAT) != _FORMAT:
        raise ValueError(f"the MLmodel flavor {FLAVOR_NAME!r} key 'format' must be {_FORMAT!r}, "
                         f"got {conf.get('format')!r}")
    kind = conf.get("model_kind")
    if kind is not None:
        on_disk = "pipeline" if (target / persistence.PIPELINE_CONFIG).is_file() else "detector"
        if kind != on_disk:
            raise ValueError(f"the MLmodel flavor {FLAVOR_NAME!r} key 'model_kind' is {kind!r}, but "
                             f"{str(target)!r} holds a {on_disk}")
    recorded = conf.get("weights_sha256")
    if recorded is not None and recorded != persistence.recorded_digest(target):
        raise ValueError(f"the MLmodel flavor {FLAVOR_NAME!r} key 'weights_sha256' does not match the weights "
                         f"that {str(target)!r} records: checksum mismatch (the model was changed after it was "
                         f"logged)")
    return target


def _flavor_conf(uri: str, local: str) -> dict[str, Any]:
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME

    mlmodel = Path(local) / MLMODEL_FILE_NAME
    if not mlmodel.is_file():
        raise _not_a_model(uri, "no MLmodel file there (not an MLflow model)")
    try:
        flavors = Model.load(str(mlmodel)).flavors
    except Exception as exc:  # noqa: BLE001 - any parse error means "not a model"
        raise _not_a_model(uri, f"unreadable MLmodel ({exc})") from exc
    if not isinstance(flavors, dict) or FLAVOR_NAME not in flavors:
        raise _not_a_model(uri, f"it has the flavors {sorted(map(str, flavors or {}))}, not {FLAVOR_NAME!r}")
    conf = flavors[FLAVOR_NAME]
    if not isinstance(conf, dict):
        raise _not_a_model(uri, f"its MLmodel flavor {FLAVOR_NAME!r} is a {type(conf).__name__}, not a mapping of "
                                "keys (the MLmodel file was edited or damaged)")
    return conf


def _load_pyfunc(path: str, model_config: dict | None = None) -> GANAnomalyPyfunc:
    """Called by ``mlflow.pyfunc.load_model`` with the path of the ``model/`` data directory.

    The MLflow model is the directory above it: its ``MLmodel`` must carry this flavor, naming
    the same directory, so a ``data`` entry leading to an arbitrary directory is refused here too.
    MLflow passes only the data path, so one leading into another whole MLflow model of this
    flavor cannot be told from that model's own; :func:`load_model` sees the model directory
    and refuses every ``data`` entry outside it."""
    from gananomaly import persistence

    root = Path(path).resolve().parent
    conf = _flavor_conf(str(root), str(root))
    target = _checked_data_dir(root, conf)
    if target != Path(path).resolve():
        raise ValueError(f"the MLmodel pyfunc 'data' ({str(path)!r}) is not the directory the {FLAVOR_NAME!r} "
                         f"flavor names ({str(target)!r})")
    return GANAnomalyPyfunc(persistence.load(target, device="cpu" if model_config is None else
                                              str(model_config.get("device", "cpu"))))


def _refuse_context(model) -> None:
    """A model whose context its pyfunc could not read from the one table ``predict`` takes is
    refused: one fitted with an unnamed context, or a bare detector fitted on an array."""
    from gananomaly.mlflow_pyfunc import context_columns, input_columns

    _, det = split_model(model)
    if getattr(det, "context_categories_", None) is None and getattr(det, "context_mean_", None) is None:
        return
    if context_columns(model) is None:
        raise ValueError("this detector was fitted with an unnamed context, which the MLflow pyfunc cannot read "
                         "(its predict takes one table): a logged or registered model could never score. Fit with "
                         "the context as a named pandas Series (categories) or DataFrame (numbers), whose column "
                         "names the served table then carries, or save it with det.save(path) and score with "
                         "det.score_samples(X, context=...)")
    if input_columns(model) is None:
        raise ValueError("this model was fitted on an array with a context: the MLflow pyfunc reads the context "
                         f"columns {det.context_names_} from a table by name beside the features, so fit on a "
                         "DataFrame (or save it with det.save(path) and score with det.score_samples(X, context=...))")
