"""Quality benchmark: AUROC and AUPRC of every contestant over data sets and seeds."""

from __future__ import annotations

import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks import datasets as _datasets
from gananomaly.fidelity import MEASURE_VERSION

__all__ = ["run_quality", "summarise", "leaderboard"]

log = logging.getLogger(__name__)

# What a contestant's fit reports about its generator, kept per run as ``gen_<key>`` and
# averaged over seeds in the summary.
FIDELITY_FIELDS = ("fidelity", "coverage", "density", "reverse_density", "precision", "recall", "parzen_gap",
                   "modes_covered", "on_mode", "test_fidelity", "test_coverage", "test_density",
                   "test_reverse_density", "held_out")


def _task(name: str, seed: int, first_seed: bool, seed_index: int, options: dict,
          deadline: float | None) -> dict:
    """All contestants on one (data set, seed): runs in a worker process or in-process."""
    import torch

    # One thread per fit: the data sets are small, and one single-threaded worker per core
    # avoids oversubscription. Restored afterwards: an in-process run must not leave the
    # caller's torch with another thread count.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_task(name, seed, first_seed, options, deadline)
    finally:
        torch.set_num_threads(threads_before)


def _run_task(name: str, seed: int, first_seed: bool, options: dict, deadline: float | None) -> dict:
    import torch

    from benchmarks import contestants as _contestants

    # The first optimiser of a process imports torch._dynamo (seconds): pay it before any
    # fit is timed.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    _contestants.PEER_EPOCHS.update(options["peer_epochs"])
    _contestants.PEER_MAX_SEEDS.update(options.get("peer_max_seeds", {}))
    _contestants.PEER_DATASETS.update(options.get("peer_datasets", {}))
    entrants = _contestants.contestants(quick=options["quick"], sweep=options["sweep"])
    only = options.get("only")
    if only:
        entrants = [c for c in entrants if any(_named(key, c.name) for key in only)]
    split = _datasets.load(name, seed)
    runs: list[dict] = []
    errors: list[dict] = []
    for order, contestant in enumerate(entrants):
        if contestant.max_seeds is not None and seed >= contestant.max_seeds:
            continue
        if contestant.datasets is not None and name not in contestant.datasets:
            continue
        if deadline is not None and time.time() > deadline:
            errors.append({"dataset": name, "seed": seed, "contestant": contestant.name,
                           "error": "skipped: time budget of the run exhausted"})
            continue
        try:
            out = contestant.run(split, seed)
            cols, fit_s = out[0], out[1]
            extra = out[2] if len(out) > 2 else {}
        except Exception as exc:  # a peer failing must not stop the benchmark
            log.debug("contestant failed", exc_info=True)
            errors.append({"dataset": name, "seed": seed, "contestant": contestant.name,
                           "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=3)})
            continue
        first_main = None
        for column, scores in cols.items():
            if not np.isfinite(scores).all():
                errors.append({"dataset": name, "seed": seed, "contestant": contestant.name,
                               "error": f"non-finite scores in column {column!r}"})
                continue
            run = {
                "dataset": name, "seed": int(seed), "contestant": contestant.name, "order": order,
                "family": contestant.family, "column": column, "main": column in contestant.main_columns,
                "auroc": float(roc_auc_score(split.y_test, scores)),
                "auprc": float(average_precision_score(split.y_test, scores)),
                "fit_s": float(fit_s),
            }
            fid = extra.get("fidelity") or {}
            for key in FIDELITY_FIELDS:
                if key in fid:
                    run[f"gen_{key}"] = float(fid[key])
            if fid:
                run["gen_fidelity_measure"] = MEASURE_VERSION
            if "epochs" in extra:
                run["epochs"] = int(extra["epochs"])
            runs.append(run)
            if run["main"] and first_main is None:
                first_main = run
        auroc = f"{first_main['auroc']:.3f}" if first_main else "n/a"
        print(f"  seed {seed} {name:14s} {contestant.name:28s} AUROC {auroc}  fit {fit_s:6.1f}s", flush=True)
    return {"dataset": name, "seed": seed, "summary": split.summary() if first_seed else None,
            "runs": runs, "errors": errors}


def _named(key: str, name: str) -> bool:
    """Whether the ``--contestants`` entry ``key`` selects ``name``: ``=NAME`` exactly, any
    other a fragment of it (case ignored)."""
    key, name = key.lower(), name.lower()
    return key[1:] == name if key.startswith("=") else key in name


def run_quality(
    names: Sequence[str],
    seeds: Sequence[int],
    options: dict,
    *,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
) -> dict:
    """Fit and score every contestant on every data set and seed.

    ``options`` holds ``quick``, ``sweep`` and ``peer_epochs`` (see
    :func:`benchmarks.contestants.contestants`). ``jobs > 1`` runs (data set, seed) tasks
    in that many worker processes. Returns ``{"datasets", "runs", "errors"}``; each run is
    one score column of one fit: ``dataset, seed, contestant, column, auroc, auprc, fit_s``.
    Contestants that raise are recorded in ``errors`` and the benchmark goes on.
    ``deadline`` (a ``time.time()`` value) skips the remaining fits once passed, so a run
    finishes in its time budget; skipped fits are recorded in ``errors``.
    """
    # Seed-major order: when the time budget runs out, every data set has the same seeds.
    tasks = [(name, seed, i == 0, i, options, deadline) for i, seed in enumerate(seeds) for name in names]
    results: list[dict] = []
    if jobs <= 1:
        for task in tasks:
            results.append(_task(*task))
            if progress is not None:
                progress(f"done: {task[0]} seed {task[1]}")
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the parent has already run torch's thread pool.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_task, *task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    results.append(future.result())
                except Exception as exc:  # a crashed worker loses its task, not the run
                    results.append({"dataset": task[0], "seed": task[1], "summary": None, "runs": [],
                                    "errors": [{"dataset": task[0], "seed": task[1], "contestant": "*",
                                                "error": f"worker failed: {type(exc).__name__}: {exc}"}]})
                if progress is not None:
                    progress(f"done: {task[0]} seed {task[1]}")
    order = {(name, seed): k for k, (name, seed, *_rest) in enumerate(tasks)}
    results.sort(key=lambda r: order[(r["dataset"], r["seed"])])
    runs = [r for res in results for r in res["runs"]]
    errors = [e for res in results for e in res["errors"]]
    summaries = [res["summary"] for res in results if res["summary"] is not None]
    return {"datasets": summaries, "runs": runs, "errors": errors}


def _entry(run: dict) -> str:
    """The name of a score column in tables: the contestant, plus the column for ours."""
    if run["family"] == "ours":
        return f"{run['contestant']} [{run['column']}]"
    return run["contestant"]


def summarise(runs: Sequence[dict]) -> list[dict]:
    """Mean and std (over seeds, ddof=0) of AUROC/AUPRC and median fit seconds, per data
    set and entry (contestant + score column)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], _entry(r))].append(r)
    out = []
    for (dataset, entry), rs in groups.items():
        au = np.array([r["auroc"] for r in rs])
        ap = np.array([r["auprc"] for r in rs])
        out.append({
            "dataset": dataset, "entry": entry, "contestant": rs[0]["contestant"], "column": rs[0]["column"],
            "family": rs[0]["family"], "main": rs[0]["main"], "n_seeds": len(rs),
            "auroc_mean": float(au.mean()), "auroc_std": float(au.std()),
            "auprc_mean": float(ap.mean()), "auprc_std": float(ap.std()),
            "fit_s_median": float(np.median([r["fit_s"] for r in rs])),
        })
        for key in (*(f"gen_{k}" for k in FIDELITY_FIELDS), "epochs"):
            vals = [r[key] for r in rs if key in r]
            if vals:
                out[-1][key] = float(np.mean(vals))
    return out


def leaderboard(summary: Sequence[dict], names: Sequence[str]) -> list[dict]:
    """Per entry: mean AUROC/AUPRC over the data sets ``names`` (only entries measured on
    all of them), the worst per-data-set std, sorted best first."""
    by_entry: dict[str, dict[str, dict]] = defaultdict(dict)
    for s in summary:
        if s["dataset"] in names:
            by_entry[s["entry"]][s["dataset"]] = s
    rows = []
    for entry, per in by_entry.items():
        if set(per) != set(names):
            continue
        first = next(iter(per.values()))
        rows.append({
            "entry": entry, "contestant": first["contestant"], "column": first["column"],
            "family": first["family"], "main": first["main"],
            "auroc_mean": float(np.mean([per[n]["auroc_mean"] for n in names])),
            "auprc_mean": float(np.mean([per[n]["auprc_mean"] for n in names])),
            "auroc_std_max": float(np.max([per[n]["auroc_std"] for n in names])),
            "auroc_std_mean": float(np.mean([per[n]["auroc_std"] for n in names])),
            "fit_s_median": float(np.median([per[n]["fit_s_median"] for n in names])),
            "n_seeds": int(min(per[n]["n_seeds"] for n in names)),
        })
    rows.sort(key=lambda r: -r["auroc_mean"])
    return rows
