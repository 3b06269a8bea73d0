"""Input conversion and device placement."""

from __future__ import annotations

import collections
import contextlib
import warnings

import numpy as np
import pandas as pd
import torch

__all__ = ["num_threads", "resolve_device", "resolve_precision", "to_tensor", "fit_scaler", "scale_moments",
           "MAX_STANDARDISED"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Resolve ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    Raises
    ------
    ValueError
        If the string is not a device, or names a CUDA device this machine does not have.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device={device!r} is not a valid device; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device("cuda", index)


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored afterwards."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision``: ``"auto"`` is bf16 on CUDA and fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


# Standardised inputs are clipped to +-this many scales: a value further out is an anomaly
# whatever its size, and the networks' float32 arithmetic stays finite (1e20 in a column of
# unit scale would otherwise overflow to an infinite score).
MAX_STANDARDISED = 1e6
# A feature whose spread is below this fraction of its largest magnitude is constant: within
# about a hundred float64 roundings of its values (a relative test: data in tiny units is not
# constant, nor is a small spread on a large offset, such as 1e8 + noise of 0.01).
CONSTANT_RELATIVE = 100 * float(np.finfo(np.float64).eps)
# A feature whose standard deviation exceeds this many robust scales (IQR / 1.349) has its
# scale set by a few extreme values: every ordinary value then standardises to about zero.
EXTREME_SPREAD = 1e4
# Elements (float64) per step of the scaler's passes over the data.
_CHUNK_ELEMENTS = 1 << 22
# Rows of the (seeded) sample the robust scale is measured on.
_ROBUST_SAMPLE_ROWS = 100_000


def _names(names, idx) -> str:
    idx = list(idx)
    shown = [repr(str(names[i])) if names is not None else str(int(i)) for i in idx[:10]]
    return ", ".join(shown) + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")


def scale_moments(X: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, std, peak)`` over ``axis`` (which includes axis 0) in float64, computed on
    the data divided by its largest magnitude so that no square overflows (a 1e300 cell
    gives a finite std), in row chunks (no full copy of ``X``)."""
    axes = axis if isinstance(axis, tuple) else (axis,)
    peak = np.abs(X).max(axis=axes).astype(np.float64)
    unit = np.where((peak > 0) & np.isfinite(peak), peak, 1.0)
    shape = [1] * X.ndim
    for d, n in zip([d for d in range(X.ndim) if d not in axes], unit.shape):
        shape[d] = n
    unit_b = unit.reshape(shape)
    count = X.size // max(unit.size, 1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, X[:1].size))

    def total(f):
        return sum(f(np.asarray(X[i : i + chunk], dtype=np.float64) / unit_b).sum(axis=axes)
                   for i in range(0, X.shape[0], chunk))

    mean = total(lambda s: s) / count
    mean_b = mean.reshape(shape)
    var = total(lambda s: np.square(s - mean_b)) / count
    return mean * unit, np.sqrt(var) * unit, peak


def fit_scaler(X: np.ndarray, names=None, what: str = "column") -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation.

    Constant features (spread below :data:`CONSTANT_RELATIVE` of their largest magnitude)
    get scale 1 and a warning naming them; so does a feature whose scale is set by a few
    extreme values (a likely data error), and training data whose rows are all identical.
    """
    mean, scale, peak = scale_moments(X, 0)
    constant = ~(scale > CONSTANT_RELATIVE * peak) | (peak == 0)
    scale[constant] = 1.0
    if constant.all():
        warnings.warn(f"every training row is identical (all {X.shape[1]} {what}s constant): every sample will "
                      "get the same score except where it differs from that one row; check the training data",
                      UserWarning, stacklevel=5)
    elif constant.any():
        warnings.warn(f"{what}s constant in the training data (scale set to 1; any other value there scores as "
                      f"anomalous): {_names(names, np.flatnonzero(constant))}", UserWarning, stacklevel=5)
    sample = X if X.shape[0] <= _ROBUST_SAMPLE_ROWS else \
        X[np.sort(np.random.RandomState(0).choice(X.shape[0], _ROBUST_SAMPLE_ROWS, replace=False))]
    q25, q75 = np.percentile(sample, [25, 75], axis=0)
    robust = (q75 - q25) / 1.349
    extreme = ~constant & (robust > 0) & (scale > EXTREME_SPREAD * robust)
    if extreme.any():
        cols = np.flatnonzero(extreme)
        warnings.warn(f"{what}s whose scale is set by a few extreme values (standard deviation above "
                      f"{EXTREME_SPREAD:g} times the interquartile spread; largest magnitude "
                      f"{peak[cols[0]]:.3g}): {_names(names, cols)}; their ordinary values will barely count. "
                      "Check them for data errors or unit mix-ups", UserWarning, stacklevel=5)
    return mean, scale


# Rows standardised per step: the float64 intermediate stays small whatever the input size.
_CHUNK_ROWS = 65536


def to_tensor(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """Standardise and convert to a float32 CPU tensor (always a copy: input arrays may be
    read-only memory maps and are never modified). Works in row chunks, so the only full
    copy of the input is the float32 result. Values beyond :data:`MAX_STANDARDISED` scales
    are clipped there."""
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        with np.errstate(over="ignore"):
            Z = (np.asarray(X[start : start + _CHUNK_ROWS], dtype=np.float64) - mean) / scale
        out[start : start + _CHUNK_ROWS] = np.clip(Z, -MAX_STANDARDISED, MAX_STANDARDISED)
    return torch.from_numpy(out)


def read_numeric(path: str):
    """A numeric table from .npy, .npz (first array), .csv or .parquet; a ValueError names
    the file and what is wrong with it."""
    import pandas as pd

    lower = str(path).lower()
    if lower.endswith((".npy", ".npz")):
        try:
            if lower.endswith(".npy"):
                return np.load(path, allow_pickle=False)
            with np.load(path, allow_pickle=False) as data:
                if not data.files:
                    raise ValueError(f"--input {str(path)!r} holds no arrays")
                return data[data.files[0]]
        except ValueError as exc:
            if "allow_pickle" in str(exc):  # an object array: only a pickle could load it
                raise ValueError(f"--input {str(path)!r} holds an array of Python objects, which is never "
                                 "unpickled; save numbers (a float or int array)") from None
            raise
    if lower.endswith(".csv"):
        try:
            with warnings.catch_warnings():  # a value beyond the header's last column: refused, not dropped
                warnings.filterwarnings("error", message="Length of header or names does not match",
                                        category=pd.errors.ParserWarning)
                df = pd.read_csv(path, index_col=False)  # trailing delimiters: not an index column
        except pd.errors.EmptyDataError:
            raise ValueError(f"--input {str(path)!r} is empty (no header, no rows)") from None
        except pd.errors.ParserWarning:
            raise ValueError(f"--input {str(path)!r}: a line has a value after the header's last column (more "
                             "fields than the header names)") from None
    elif lower.endswith((".parquet", ".pq")):
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"--input {str(path)!r}: unsupported file type (use .npy, .npz, .csv or .parquet)")
    if len(df) == 0:
        raise ValueError(f"--input {str(path)!r} has no data rows (columns: {[str(c) for c in df.columns][:10]})")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"--input {str(path)!r}: non-numeric columns {bad[:5]}; use `gananomaly tabular fit` "
                         "for mixed-type tables")
    try:
        check_table(df, rows_from=1)  # a file's rows counted from 1, as `gananomaly score` counts them
    except ValueError as exc:
        raise ValueError(f"--input {str(path)!r}: {exc}") from None
    return df


_PIPELINE_HINT = ("the detector takes numbers only; the tabular pipeline (gananomaly.pipelines.tabular / "
                  "`gananomaly tabular fit`) imputes missing values and encodes categories")


def row_indices(rows) -> str:
    """``index 3`` or ``indices 3, 7, 12, 15, 20 and 4 more`` (from 0, as ``X[i]``)."""
    rows = [int(r) for r in rows]
    shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"{'indices' if len(rows) > 1 else 'index'} {shown}"


def _where(mask: np.ndarray, names, rows_from: int = 0) -> str:
    """``column 'a': row indices 3, 17; column 'b': row index 0`` for the True cells of a 2-D
    mask (indices count from 0, as ``X[i]``); with ``rows_from=1``, ``column 'a': rows 4, 18
    (counted from 1)``, as a file's or a served request's rows are named."""
    parts = []
    for j in np.flatnonzero(mask.any(axis=0))[:5]:
        rows = np.flatnonzero(mask[:, j]) + rows_from
        if rows_from:
            shown = ", ".join(str(int(r)) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
            parts.append(f"column {names[j]!r}: row{'s' if len(rows) > 1 else ''} {shown} (counted from {rows_from})")
        else:
            parts.append(f"column {names[j]!r}: row {row_indices(rows)}")
    more = int(mask.any(axis=0).sum()) - 5
    return "; ".join(parts) + (f"; and {more} more columns" if more > 0 else "")


def _is_number(v) -> bool:
    """A cell numpy converts to float64: a number, or text that reads as one."""
    if v is None or isinstance(v, (bool, int, float, np.number, np.bool_)):
        return True
    if isinstance(v, (str, bytes)):
        try:
            float(v)
            return True
        except ValueError:
            return False
    return False


def _numbers_only(col: pd.Series) -> bool:
    """An object column whose cells are all numbers or missing (no text)."""
    return all(isinstance(v, (int, float, np.number, np.bool_)) for v in col.dropna())


def check_table(X, rows_from: int = 0) -> None:
    """Name the columns (and rows) of table input the detector cannot take, before
    scikit-learn's generic conversion errors: non-numeric columns, missing or infinite values.
    Rows are named by index from 0 (``X[i]``), or counted from ``rows_from``."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):  # DataFrame
        counts = collections.Counter(str(c) for c in X.columns)
        dupes = sorted(c for c, n in counts.items() if n > 1)
        if dupes:
            raise ValueError(f"X has duplicate column names {dupes[:10]}: every column needs its own name")
        bad = [(c, str(t)) for c, t in X.dtypes.items()
               if not (pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t)
                       or (t is np.dtype(object) and _numbers_only(X[c])))]  # object columns of numbers are numbers
        if bad:
            shown = ", ".join(f"{c!r} ({t})" for c, t in bad[:10])
            raise ValueError(f"non-numeric columns {shown}: {_PIPELINE_HINT}")
        names = [str(c) for c in X.columns]
        values = X.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        try:
            values = np.asarray(X)
        except (TypeError, ValueError):
            return  # ragged input: scikit-learn's message says what is wrong
        if values.ndim != 2:
            return
        if values.dtype.kind in "Mm":
            raise ValueError(f"X holds dates or durations ({values.dtype}), not numbers: derive numbers from them "
                             "(days since a date, hour of day, seconds, ...)")
        if values.dtype.kind in "OUS":
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError) as exc:
                bad = np.zeros(values.shape, dtype=bool)
                for j in range(values.shape[1]):
                    bad[:, j] = [not _is_number(v) for v in values[:, j]]
                example = values[bad][0] if bad.any() else None
                example = example.item() if isinstance(example, np.generic) else example
                # the type of the conversion error is kept (scikit-learn's contract: TypeError
                # for objects that are no numbers at all, ValueError for unparsable strings)
                raise type(exc)(f"non-numeric values: {_where(bad, list(range(values.shape[1])), rows_from)} "
                                f"(e.g. {example!r}; {exc}): {_PIPELINE_HINT}") from None
        elif values.dtype.kind not in "fiub":
            return
        names = list(range(values.shape[1]))
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            kind = "missing (NaN)" if np.isnan(values[bad]).all() else "infinity or missing (NaN)"
            raise ValueError(f"X has {kind} values: {_where(bad, names, rows_from)}; {_PIPELINE_HINT}")


def refuse_bool_numbers(constraints: dict, params: dict, owner: str) -> None:
    """scikit-learn's numeric constraints take ``True`` as 1: refuse a bool wherever a
    parameter does not take booleans (``max_time=True``, ``epochs=False``)."""
    for key, value in params.items():
        if (isinstance(value, (bool, np.bool_)) and key in constraints
                and not {"boolean", "verbose"} & {c for c in constraints[key] if isinstance(c, str)}):
            raise ValueError(f"The {key!r} parameter of {owner} must be a number, not a bool; got {value!r}")
