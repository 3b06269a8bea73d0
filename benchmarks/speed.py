"""Speed and memory benchmark: fit seconds, scoring rows/s, batched latent refinement
against PyOD AnoGAN's per-row latent search, and peak resident memory.

Every number is paired with IsolationForest (or PyOD AnoGAN) measured in the same run on
the same data, and reported as a ratio, so a busy machine moves both sides together.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["make_data", "run_speed", "run_refinement", "run_memory", "gpu_section", "N_FEATURES"]

N_FEATURES = 30
FIT_ROWS = 10_000  # ours and IsolationForest are fitted on this many rows for the scoring runs
MEMORY_FIT_ROWS = 2_000  # the memory runs fit on this many rows, then score
FIT_EPOCHS = "auto"  # epochs of the timed fits (the default; a smoke run of the harness lowers it)


def make_data(n_rows: int, seed: int = 0) -> np.ndarray:
    """Tabular data: a correlated Gaussian in ``N_FEATURES`` dimensions."""
    rng = np.random.RandomState(seed)
    mix = rng.randn(N_FEATURES, N_FEATURES) / np.sqrt(N_FEATURES)
    return rng.randn(n_rows, N_FEATURES) @ mix + rng.uniform(-2, 2, N_FEATURES)


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _ours(**kwargs):
    from gananomaly import GANAnomalyDetector

    return GANAnomalyDetector(random_state=0, device="cpu", **kwargs)


def _iforest(n_jobs: int | None = None):
    from sklearn.ensemble import IsolationForest

    return IsolationForest(random_state=0, n_jobs=n_jobs)


def iforest_scores(model, X, n_jobs: int | None):
    """``model.score_samples(X)`` on ``n_jobs`` threads: IsolationForest's ``n_jobs`` sets only
    its fit's threads; scoring runs sequentially unless a joblib configuration says otherwise."""
    from joblib import parallel_config

    with parallel_config(n_jobs=n_jobs):
        return model.score_samples(X)


@contextlib.contextmanager
def threads(n: int | None):
    """Run with ``n`` torch intra-op threads (None: leave torch's setting)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_speed(sizes: Sequence[int], fit_sizes: Sequence[int], n_threads: int, *,
              progress: Callable[[str], None] | None = None) -> dict:
    """Fit seconds at ``fit_sizes`` and ``score_samples`` rows/s at ``sizes``, ours and
    IsolationForest, both with ``n_threads`` (torch threads, ``n_jobs``)."""
    with threads(n_threads):
        out = _run_speed(sizes, fit_sizes, n_threads, progress)
    return out


def _run_speed(sizes: Sequence[int], fit_sizes: Sequence[int], n_threads: int,
               progress: Callable[[str], None] | None) -> dict:
    import torch

    # Warm-up: the first optimiser a process builds imports torch._dynamo (seconds); that
    # one-time cost is reported separately, not inside the first fit's time.
    start = time.perf_counter()
    _ours(epochs=1, encoder_epochs=1).fit(make_data(200, seed=0))
    warmup_s = time.perf_counter() - start
    if progress is not None:
        progress(f"first fit in a fresh process (one-time imports included): {warmup_s:.1f}s")
    fit_rows = []
    for n in fit_sizes:
        X = make_data(n, seed=1)
        cpu = time.process_time()
        ours_s = _timed(lambda X=X: _ours(epochs=FIT_EPOCHS).fit(X), 1)
        ours_cpu_s = time.process_time() - cpu  # what the fit costs without other load
        if_s = _timed(lambda X=X: _iforest(n_threads).fit(X), 3)
        fit_rows.append({"n_rows": int(n), "ours_s": ours_s, "ours_cpu_s": ours_cpu_s, "iforest_s": if_s,
                         "ratio_ours_over_iforest": ours_s / if_s})
        if progress is not None:
            progress(f"fit {n:>9,d} rows: ours {ours_s:7.2f}s (CPU {ours_cpu_s:.1f}s)  IsolationForest {if_s:6.2f}s")
    X_fit = make_data(FIT_ROWS, seed=1)
    ours = _ours(epochs=1).fit(X_fit)  # scoring speed does not depend on how long it trained
    # The knob that trades speed: half the default hidden width (quality in the sweep).
    half = max(8, ours.arch_["hidden_dims"][0] // 2)
    ours_half = _ours(epochs=1, hidden_dims=(half, half)).fit(X_fit)
    iforest = _iforest(n_threads).fit(X_fit)
    score_rows = []
    for n in sizes:
        X = make_data(n, seed=2)
        repeats = 3 if n <= 100_000 else 1
        ours.score_samples(X[: min(n, 1000)])  # warm-up: first-call allocations
        ours_s = _timed(lambda X=X: ours.score_samples(X), repeats)
        if_s = _timed(lambda X=X: iforest_scores(iforest, X, n_threads), repeats)
        ours_half.score_samples(X[: min(n, 1000)])
        half_s = _timed(lambda X=X: ours_half.score_samples(X), repeats)
        row = {"n_rows": int(n), "ours_rows_per_s": n / ours_s, "iforest_rows_per_s": n / if_s,
               "ratio_ours_over_iforest": if_s / ours_s, "repeats": repeats,
               "ours_half_width_rows_per_s": n / half_s, "ratio_half_width_over_iforest": if_s / half_s}
        score_rows.append(row)
        if progress is not None:
            progress(f"score {n:>9,d} rows: ours {n / ours_s:12,.0f} rows/s  IsolationForest {n / if_s:12,.0f} rows/s"
                     f"  ratio {row['ratio_ours_over_iforest']:.2f}")
    return {"n_features": N_FEATURES, "threads": torch.get_num_threads(), "fit_rows_for_scoring": FIT_ROWS,
            "fit_epochs": FIT_EPOCHS,
            "first_fit_in_process_s": warmup_s,
            "fit": fit_rows, "score": score_rows}


def _anogan_fit_seconds(X: np.ndarray, epochs: int) -> float:
    import torch
    from pyod.models.anogan import AnoGAN

    torch.manual_seed(0)
    model = AnoGAN(epochs=epochs)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    return time.perf_counter() - start


def run_refinement(n_rows_ours: int, n_rows_anogan: int, n_threads: int, steps: int = 20, *,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Per-row cost of latent search: ours (``n_refine_steps=steps``, every row at once)
    against PyOD AnoGAN's search (``epochs_query=steps`` Adam steps, one row at a time).

    PyOD runs its per-row search inside ``fit`` over the training rows (its
    ``decision_function`` scores every row against one fixed latent point), so its cost is
    measured as ``fit(epochs=1)`` minus one GAN training epoch, the epoch's cost estimated
    from ``fit(epochs=11) - fit(epochs=1)``.
    """
    with threads(n_threads):
        out = _run_refinement(n_rows_ours, n_rows_anogan, steps)
    if progress is not None:
        ratio = out["ratio_ours_over_anogan"]
        progress(f"latent search, {steps} steps: ours {out['ours']['rows_per_s']:,.0f} rows/s; PyOD AnoGAN "
                 + (f"{out['pyod_anogan']['rows_per_s']:,.1f} rows/s; ratio {ratio:,.0f}x" if ratio else "n/a"))
    return out


def _run_refinement(n_rows_ours: int, n_rows_anogan: int, steps: int) -> dict:
    X = make_data(max(n_rows_ours, n_rows_anogan), seed=3)
    # One fit: refinement only changes scoring (the networks are the same), so both timings
    # score the raw components, without and with ``steps`` refinement steps per row.
    ours = _ours(epochs=1).fit(make_data(FIT_ROWS, seed=1))
    Xo = X[:n_rows_ours]
    ours.score_samples(Xo[:1000])
    plain_s = _timed(lambda: ours.score_components(Xo, raw=True), 1)
    ours_s = _timed(lambda: ours.score_components(Xo, raw=True, n_refine_steps=steps), 1)
    out: dict = {"steps": steps, "ours": {"n_rows": n_rows_ours, "seconds": ours_s,
                                          "rows_per_s": n_rows_ours / ours_s,
                                          "seconds_without_refinement": plain_s}}
    try:
        Xa = X[:n_rows_anogan]
        one = _anogan_fit_seconds(Xa, 1)
        eleven = _anogan_fit_seconds(Xa, 11)
        epoch_s = max(0.0, (eleven - one) / 10)
        search_s = max(one - epoch_s, 1e-9)
        out["pyod_anogan"] = {"n_rows": n_rows_anogan, "seconds": search_s, "rows_per_s": n_rows_anogan / search_s,
                              "fit_epochs1_s": one, "fit_epochs11_s": eleven}
        out["ratio_ours_over_anogan"] = out["ours"]["rows_per_s"] / out["pyod_anogan"]["rows_per_s"]
    except ImportError:
        out["pyod_anogan"] = None
        out["ratio_ours_over_anogan"] = None
    return out


# ----------------------------------------------------------------------------- memory
def _vm_hwm_mib() -> float:
    """Peak resident set of this process image (``VmHWM``), MiB. Unlike ``ru_maxrss`` it
    is not inherited from the parent across fork + exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not found in /proc/self/status")


def _reset_hwm() -> bool:
    """Reset the peak-RSS mark (Linux ``clear_refs`` 5); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _rss_child(what: str, n_rows: int, n_threads: int, fit_rows: int = 2_000) -> dict:
    """Runs in a fresh interpreter: fit on ``fit_rows`` rows, then score ``n_rows``; report the
    peak RSS of the whole process and the peak while scoring (Linux ``/proc``)."""
    import gc

    import torch

    torch.set_num_threads(n_threads)
    X_fit = make_data(fit_rows, seed=1)
    model = _ours(epochs=1).fit(X_fit) if what == "ours" else _iforest(n_threads).fit(X_fit)
    X = make_data(n_rows, seed=2)
    gc.collect()
    before = _vm_hwm_mib()
    reset = _reset_hwm()
    with open("/proc/self/status") as fh:
        current = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))
    model.score_samples(X)
    peak_scoring = _vm_hwm_mib()
    return {"what": what, "n_rows": n_rows, "rss_before_scoring_mib": current,
            "peak_rss_mib": max(before, peak_scoring), "peak_while_scoring_mib": peak_scoring if reset else None,
            "input_mib": X.nbytes / 2**20}


def run_memory(sizes: Sequence[int], n_threads: int, *, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Peak RSS of scoring ``n`` rows, ours and IsolationForest, each in its own process."""
    rows = []
    for n in sizes:
        for what in ("ours", "iforest"):
            code = ("import json, sys; from benchmarks.speed import _rss_child; "
                    f"print(json.dumps(_rss_child({what!r}, {int(n)}, {int(n_threads)}, {int(MEMORY_FIT_ROWS)})))")
            env = dict(os.environ, PYTHONWARNINGS="ignore")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=1800)
            if proc.returncode != 0:
                rows.append({"what": what, "n_rows": int(n), "error": proc.stderr.strip()[-500:]})
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if row["peak_while_scoring_mib"] is not None:
                row["scoring_growth_mib"] = row["peak_while_scoring_mib"] - row["rss_before_scoring_mib"]
            rows.append(row)
            if progress is not None:
                growth = row.get("scoring_growth_mib")
                progress(f"memory {what:8s} {n:>9,d} rows: peak RSS {row['peak_rss_mib']:8.1f} MiB "
                         f"(+{growth if growth is not None else float('nan'):.1f} MiB while scoring; "
                         f"input {row['input_mib']:.1f} MiB)")
    return rows


# ----------------------------------------------------------------------------- GPU
def gpu_section(n_rows: int = 1_000_000) -> dict:
    """Scoring rows/s on CUDA (fp32 and bf16) and the AUROC change of bf16 on breast cancer;
    ``measured: False`` with the reason when no CUDA device is present."""
    import torch

    if not torch.cuda.is_available():
        return {"measured": False, "note": "not measured: no GPU in this session"}
    from sklearn.metrics import roc_auc_score

    from benchmarks.datasets import breast_cancer
    from gananomaly import GANAnomalyDetector

    out: dict = {"measured": True, "device": torch.cuda.get_device_name(0), "n_rows": n_rows}
    X_fit, X = make_data(FIT_ROWS, seed=1), make_data(n_rows, seed=2)
    split = breast_cancer(0)
    for precision in ("fp32", "bf16"):
        det = GANAnomalyDetector(random_state=0, device="cuda", precision=precision, epochs=5).fit(X_fit)
        det.score_samples(X[:10_000])
        torch.cuda.synchronize()
        seconds = _timed(lambda det=det: det.score_samples(X), 3)
        q = GANAnomalyDetector(random_state=0, device="cuda", precision=precision).fit(split.X_train)
        out[precision] = {"rows_per_s": n_rows / seconds,
                          "breast_cancer_auroc": float(roc_auc_score(split.y_test, -q.score_samples(split.X_test)))}
    out["bf16_auroc_change"] = out["bf16"]["breast_cancer_auroc"] - out["fp32"]["breast_cancer_auroc"]
    return out
