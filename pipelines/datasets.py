"""Built-in tables for the tabular pipeline: real data shipped with scikit-learn and a
generated mixed-type table with planted anomalies.

Every loader returns a :class:`pandas.DataFrame` with an ID column and a label column, so
the same config keys (``id_columns``, ``label_column``, ``anomaly_values``) work for
built-in data and for files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = ["BUILTIN_DATASETS", "load_builtin", "breast_cancer", "wine", "mixed_table"]


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's breast-cancer data: 30 numeric features, ``sample_id``, and
    ``diagnosis`` (``"benign"`` = normal, ``"malignant"`` = anomaly)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.data.copy()
    df.insert(0, "sample_id", np.arange(len(df)))
    df["diagnosis"] = np.where(data.target.to_numpy() == 0, "malignant", "benign")
    return df


def wine(rare_class: int = 2, n_rare: int = 10, random_state: int = 0) -> pd.DataFrame:
    """scikit-learn's wine data with one cultivar made rare: every row of the other two
    classes plus ``n_rare`` randomly chosen rows of ``rare_class``.

    Parameters
    ----------
    rare_class : {0, 1, 2}, default=2
        The cultivar that plays the anomaly.
    n_rare : int, default=10
        How many of its rows to keep (at most all of them).
    random_state : int, default=0

    Returns
    -------
    DataFrame with 13 numeric features, ``sample_id`` and ``cultivar`` (0, 1 or 2).
    """
    from sklearn.datasets import load_wine

    if rare_class not in (0, 1, 2):
        raise ValueError(f"wine: rare_class must be 0, 1 or 2, got {rare_class!r}")
    if not isinstance(n_rare, int) or n_rare < 1:
        raise ValueError(f"wine: n_rare must be a positive int, got {n_rare!r}")
    data = load_wine(as_frame=True)
    df = data.data.copy()
    df.insert(0, "sample_id", np.arange(len(df)))
    df["cultivar"] = data.target.to_numpy()
    rng = np.random.RandomState(random_state)
    rare = np.flatnonzero(df["cultivar"].to_numpy() == rare_class)
    keep_rare = rng.choice(rare, size=min(n_rare, len(rare)), replace=False)
    keep = np.sort(np.r_[np.flatnonzero(df["cultivar"].to_numpy() != rare_class), keep_rare])
    return df.iloc[keep].reset_index(drop=True)


_CHANNEL_DEVICES = {"web": "desktop", "app": "mobile", "store": "pos"}
_TIER_AMOUNT = {"basic": (3.0, 0.25), "plus": (4.5, 0.25), "premium": (6.0, 0.25)}  # log-amount mean, std
_COUNTRIES = ["DE", "FR"]


def _normal_rows(rng: np.random.RandomState, n: int) -> dict[str, np.ndarray]:
    channel = rng.choice(list(_CHANNEL_DEVICES), size=n, p=[0.5, 0.3, 0.2])
    device = np.array([_CHANNEL_DEVICES[c] for c in channel], dtype=object)
    tier = rng.choice(list(_TIER_AMOUNT), size=n, p=[0.6, 0.3, 0.1])
    mu = np.array([_TIER_AMOUNT[t][0] for t in tier])
    sd = np.array([_TIER_AMOUNT[t][1] for t in tier])
    amount = np.exp(mu + sd * rng.randn(n))
    n_items = rng.poisson(3, size=n) + 1
    duration = 30.0 * n_items + 5.0 * rng.randn(n)  # seconds; tied to the basket size
    age = np.clip(rng.normal(40, 12, size=n), 18, 90)
    country = rng.choice(_COUNTRIES, size=n, p=[0.6, 0.4])
    return {"channel": channel, "device": device, "tier": tier, "amount": amount, "n_items": n_items,
            "duration_s": duration, "customer_age": age, "country": country}


def _plant(rng: np.random.RandomState, rows: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Turn the rows ``idx`` into anomalies of four kinds; returns the kind of each."""
    kinds = np.array(["category_combination", "amount_range", "duration_for_items", "numeric_range"],
                     dtype=object)[np.arange(len(idx)) % 4]
    for i, kind in zip(idx, kinds):
        if kind == "category_combination":
            # every value is common on its own; the pair never occurs in normal data
            channel = rows["channel"][i]
            rows["device"][i] = rng.choice([d for c, d in _CHANNEL_DEVICES.items() if c != channel])
        elif kind == "amount_range":
            # far above what any tier spends (premium: about 400), on a basic account
            rows["tier"][i] = "basic"
            rows["amount"][i] = float(np.exp(7.5 + 0.25 * rng.randn()))
        elif kind == "duration_for_items":
            # a large basket checked out in a few seconds
            rows["n_items"][i] = int(rng.randint(8, 12))
            rows["duration_s"][i] = float(rng.uniform(1, 5))
        else:
            # customer age and basket size far outside the normal ranges (the duration follows the
            # basket size at the normal time per item, so it leaves its range too)
            rows["customer_age"][i] = float(rng.uniform(110, 130))
            rows["n_items"][i] = int(rng.randint(25, 40))
            rows["duration_s"][i] = 30.0 * rows["n_items"][i] + 5.0 * rng.randn()
    return kinds


def mixed_table(n_samples: int = 2000, contamination: float = 0.05, missing_rate: float = 0.02,
                random_state: int = 0) -> pd.DataFrame:
    """A generated table of purchases, numeric and categorical, with planted anomalies.

    Normal rows follow fixed rules: the device follows the channel (``web``: ``desktop``,
    ``app``: ``mobile``, ``store``: ``pos``), the amount depends on the account tier, the checkout duration is about
    30 s per item. Anomalies break exactly one rule each, in four kinds:
    ``category_combination`` (a channel with another channel's device, e.g. a store
    purchase from a phone), ``amount_range`` (an amount far above every tier's, on a basic
    account), ``duration_for_items`` (a large basket checked out in seconds) and
    ``numeric_range`` (age and basket size far outside the normal ranges, and the checkout
    duration with the basket size: it keeps the normal time per item).

    Parameters
    ----------
    n_samples : int, default=2000
    contamination : float in [0, 0.5), default=0.05
        Fraction of anomalous rows.
    missing_rate : float in [0, 0.5), default=0.02
        Fraction of missing cells in ``customer_age`` and ``country`` (for the imputers).
    random_state : int, default=0

    Returns
    -------
    DataFrame with ``order_id``, the feature columns, ``is_anomaly`` (0/1) and
    ``anomaly_kind`` (``"normal"`` or one of the kinds above).
    """
    if not isinstance(n_samples, int) or n_samples < 10:
        raise ValueError(f"mixed: n_samples must be an int >= 10, got {n_samples!r}")
    if not 0 <= contamination < 0.5:
        raise ValueError(f"mixed: contamination must be in [0, 0.5), got {contamination!r}")
    if not 0 <= missing_rate < 0.5:
        raise ValueError(f"mixed: missing_rate must be in [0, 0.5), got {missing_rate!r}")
    rng = np.random.RandomState(random_state)
    rows = _normal_rows(rng, n_samples)
    rows["channel"] = rows["channel"].astype(object)
    rows["tier"] = rows["tier"].astype(object)
    rows["amount"] = rows["amount"].astype(np.float64)
    rows["duration_s"] = rows["duration_s"].astype(np.float64)
    n_anom = int(round(contamination * n_samples))
    idx = rng.choice(n_samples, size=n_anom, replace=False)
    kinds = np.full(n_samples, "normal", dtype=object)
    kinds[idx] = _plant(rng, rows, idx)
    df = pd.DataFrame(rows)
    df["amount"] = df["amount"].round(2)
    df["duration_s"] = df["duration_s"].round(1)
    df["customer_age"] = df["customer_age"].round(0)
    for col in ("customer_age", "country"):
        mask = rng.rand(n_samples) < missing_rate
        df[col] = df[col].astype(object if col == "country" else np.float64)
        df.loc[mask, col] = None if col == "country" else np.nan
    df.insert(0, "order_id", [f"o{i:06d}" for i in range(n_samples)])
    df["is_anomaly"] = (kinds != "normal").astype(int)
    df["anomaly_kind"] = kinds
    return df


BUILTIN_DATASETS: dict[str, Callable[..., pd.DataFrame]] = {
    "breast_cancer": breast_cancer,
    "wine": wine,
    "mixed": mixed_table,
}


def load_builtin(name: str, **options) -> pd.DataFrame:
    """Load a built-in table by name (``"breast_cancer"``, ``"wine"``, ``"mixed"``).

    Raises
    ------
    ValueError
        Unknown name, or options the loader does not take.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"data.builtin: unknown data set {name!r}; choose from {sorted(BUILTIN_DATASETS)}")
    try:
        return BUILTIN_DATASETS[name](**options)
    except TypeError as exc:
        raise ValueError(f"data.options: invalid options for built-in data set {name!r}: {exc}") from exc
