"""Images: texture defects against the classical baselines, anomaly maps, images per second.

``python -m benchmarks.images [--seeds N] [--out DIR] [--md PATH] [--quick]`` measures, on the
texture-defect task (:func:`gananomaly.pipelines.image_data.texture_defects`: 600 normal 32x32 training
patches; 200 normal and 50 per defect kind in the test set), with every model at its defaults
and the same data and seed:

* image AUROC per defect kind: the detector, IsolationForest on the raw pixels, the per-pixel
  z-score against the training images (max over the image), a hand-made local high-pass
  energy (the input minus its 3x3 local mean, squared, in 4x4 windows, mean of the top 2 %:
  the detector's map score applied to the input itself instead of to its residual), and the
  LAPGAN detector;
* pixel AUROC and PRO (MVTec AD's per-region overlap up to FPR 0.3) per defect kind of the
  detector's ``anomaly_map`` against the z-score map;
* the image generator's fidelity on held-out patches and the seconds per default fit;
* training and scoring images per second at 32x32 and 64x64, 1 thread and all threads.

It prints a table, writes ``images.json`` to ``--out`` and, with ``--md``, a Markdown report
(the published one is ``benchmarks/IMAGES.md``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gananomaly.pipelines.image_data import TEXTURE_DEFECTS, texture_defects
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

from benchmarks.contestants import fidelity_on_test_rows
from gananomaly import GANAnomalyDetector
from gananomaly.fidelity import manifold_metrics
from gananomaly.lapgan import LaplacianPyramidDetector
from gananomaly.metrics import pixel_auroc, pro_score

# Targets of the image issue: every kind >= IsolationForest, the mean >= IsolationForest + 0.10,
# a default fit within 10 minutes on 2 CPU cores.
TARGET_MARGIN = 0.10
TARGET_FIT_SECONDS = 600.0
# Training options that run faster than the defaults, measured for quality, fidelity and speed
# beside them (the names are the rows of the report).
OPTIONS = {"ours, precision=bf16": {"precision": "bf16"}, "ours, width 8": {"hidden_dims": (8,)}}


def _highpass_energy(X: np.ndarray) -> np.ndarray:
    """Hand-made baseline: squared local detail of the input, 4x4 windows, mean of the top 2 %."""
    t = torch.from_numpy(X[:, None].astype(np.float32))
    local = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    windows = F.avg_pool2d((t - local).pow(2), 4, stride=1).flatten(1)
    top = max(1, round(0.02 * windows.shape[1]))
    return windows.topk(top, dim=1).values.mean(1).double().numpy()


def real_patch_ceiling(X_train: np.ndarray, normal_test: np.ndarray) -> float:
    """The fidelity that training patches reach in place of generated ones, oriented as
    ``generator_fidelity(normal_test)``: the test patches are the real rows."""
    return manifold_metrics(normal_test, X_train[: len(normal_test)])["fidelity"]


def _fidelity(det: GANAnomalyDetector, normal_test: np.ndarray, seed: int) -> dict[str, float]:
    """The fit's held-out fidelity measures, and the same on the normal test patches
    (``test_*``: never seen in training nor in choosing the generator kept)."""
    return {**{k: float(v) for k, v in (det.fidelity_ or {}).items()}, **fidelity_on_test_rows(det, normal_test, seed)}


def texture_quality(seed: int, *, n_train: int = 600, n_test_normal: int = 200, n_per_defect: int = 50,
                    options: bool = True) -> dict:
    """Every measurement of one seed on the texture task."""
    X_train, X_test, kinds, masks = texture_defects(n_train=n_train, n_test_normal=n_test_normal,
                                                    n_per_defect=n_per_defect, seed=seed, return_masks=True)
    normal = kinds == "normal"
    flat_train, flat_test = X_train.reshape(len(X_train), -1), X_test.reshape(len(X_test), -1)
    mu, sd = flat_train.mean(0), flat_train.std(0) + 1e-6
    z_maps = np.abs((X_test - mu.reshape(X_test.shape[1:])) / sd.reshape(X_test.shape[1:]))
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    det = GANAnomalyDetector(random_state=seed).fit(X_train)
    seconds["ours"] = time.perf_counter() - start
    scores["ours"] = -det.score_samples(X_test)
    our_maps = det.anomaly_map(X_test)
    fidelity = {"ours": _fidelity(det, X_test[normal], seed)}
    # what real patches reach on the same test patches: the ceiling of test_fidelity
    fidelity["ours"]["test_fidelity_of_real_patches"] = real_patch_ceiling(X_train, X_test[normal])
    for name, params in (OPTIONS.items() if options else ()):
        start = time.perf_counter()
        option = GANAnomalyDetector(random_state=seed, **params).fit(X_train)
        seconds[name] = time.perf_counter() - start
        scores[name] = -option.score_samples(X_test)
        fidelity[name] = _fidelity(option, X_test[normal], seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-level fidelity warnings: the AUROC is what is compared
        lap = LaplacianPyramidDetector(random_state=seed).fit(X_train)
    seconds["LAPGAN"] = time.perf_counter() - start
    scores["LAPGAN"] = -lap.score_samples(X_test)
    start = time.perf_counter()
    iforest = IsolationForest(random_state=seed).fit(flat_train)
    seconds["IsolationForest"] = time.perf_counter() - start  # the fit alone, as ours
    scores["IsolationForest"] = -iforest.score_samples(flat_test)
    scores["z-score"] = z_maps.reshape(len(X_test), -1).max(1)
    scores["high-pass energy"] = _highpass_energy(X_test)

    auroc = {name: {} for name in scores}
    pixel = {name: {} for name in ("ours", "z-score")}
    maps = {"ours": our_maps, "z-score": z_maps}
    for kind in TEXTURE_DEFECTS:
        sel = normal | (kinds == kind)
        for name, s in scores.items():
            auroc[name][kind] = float(roc_auc_score(~normal[sel], s[sel]))
        for name, m in maps.items():
            pixel[name][kind] = {"pixel_auroc": pixel_auroc(masks[sel], m[sel]), "pro": pro_score(masks[sel], m[sel])}
    for name in auroc:
        auroc[name]["mean"] = float(np.mean([auroc[name][k] for k in TEXTURE_DEFECTS]))
    return {"seed": seed, "auroc": auroc, "pixel": pixel, "seconds": seconds, "fidelity": fidelity["ours"],
            "option_fidelity": {k: v for k, v in fidelity.items() if k != "ours"}, "epochs": int(det.n_epochs_)}


def throughput(sizes=(32, 64), n_images: int = 1024, options: bool = True) -> list[dict]:
    """Training (steady state) and scoring images/s of the default conv detector on 1 thread and
    all threads, and of the :data:`OPTIONS` on 1 thread."""
    from gananomaly.pipelines.image import conv_throughput

    rows = []
    before = torch.get_num_threads()
    cases = [("defaults", threads, {}) for threads in sorted({1, before})]
    cases += [(name, 1, params) for name, params in (OPTIONS.items() if options else ())]
    try:
        for model, threads, params in cases:
            torch.set_num_threads(threads)
            table = conv_throughput(sizes, channels=1, n_images=n_images, params=params)
            for size, row in table.iterrows():
                rows.append({"model": model, "size": size, "threads": threads,
                             "train_images_per_s": float(row["train_images_per_s"]),
                             "score_images_per_s": float(row["score_images_per_s"])})
    finally:
        torch.set_num_threads(before)
    return rows


_SCORE_FOLDER = """
import json, resource, sys, time
from gananomaly.pipelines.batch_score import score_file
start = time.perf_counter()
stats = score_file(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": stats["rows_scored"],
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def folder_scale(counts=(10_000, 100_000), size: int = 32) -> list[dict]:
    """Score folders of ``count`` generated PNG files with ``gananomaly score``'s job, each in
    a fresh process: images/s and the process's peak RSS (bounded memory: the same peak
    for 10x the files)."""
    import subprocess
    import sys
    import tempfile

    from PIL import Image

    rng = np.random.RandomState(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = rng.rand(256, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a two-epoch model: speed does not depend on what it learned
            GANAnomalyDetector(epochs=2, encoder_epochs=2, random_state=0).fit(train).save(root / "model")
        folder = root / "images"
        folder.mkdir()
        written = 0
        for count in sorted(counts):
            for i in range(written, count):
                pixels = (255 * rng.rand(size, size)).astype(np.uint8)
                sub = folder / f"{i // 1000:03d}"  # 1,000 files per subfolder
                sub.mkdir(exist_ok=True)
                Image.fromarray(pixels, mode="L").save(sub / f"{i:06d}.png")
            written = count
            proc = subprocess.run([sys.executable, "-c", _SCORE_FOLDER, str(root / "model"), str(folder),
                                   str(root / "scores.parquet")], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent.parent)
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"files": count, "size": f"{size}x{size}", "images_per_s": got["rows"] / got["seconds"],
                         "peak_rss_mib": got["peak_rss_mib"], "rows": got["rows"]})
    return rows


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds of every AUROC, pixel measure, fidelity and fit time."""
    def ms(values):
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    out = {"auroc": {}, "pixel": {}, "seconds": {}, "fidelity": {}}
    for name in runs[0]["auroc"]:
        out["auroc"][name] = {k: ms([r["auroc"][name][k] for r in runs]) for k in runs[0]["auroc"][name]}
    for name in runs[0]["pixel"]:
        out["pixel"][name] = {k: {m: ms([r["pixel"][name][k][m] for r in runs]) for m in ("pixel_auroc", "pro")}
                              for k in TEXTURE_DEFECTS}
    for name in runs[0]["seconds"]:
        out["seconds"][name] = ms([r["seconds"][name] for r in runs])
    for key in ("test_fidelity", "test_fidelity_of_real_patches", "test_reverse_density", "test_coverage",
                "test_density", "fidelity", "reverse_density", "coverage", "density", "precision", "recall"):
        if all(key in r["fidelity"] for r in runs):
            out["fidelity"][key] = ms([r["fidelity"][key] for r in runs])
    out["option_fidelity"] = {name: {key: ms([r["option_fidelity"][name][key] for r in runs])
                                     for key in ("test_fidelity", "test_reverse_density", "fidelity")
                                     if all(key in r["option_fidelity"].get(name, {}) for r in runs)}
                              for name in runs[0].get("option_fidelity", {})}
    ours, iso = out["auroc"]["ours"], out["auroc"]["IsolationForest"]
    out["targets"] = {
        "every kind >= IsolationForest": all(ours[k]["mean"] >= iso[k]["mean"] for k in TEXTURE_DEFECTS),
        f"mean >= IsolationForest + {TARGET_MARGIN}": ours["mean"]["mean"] >= iso["mean"]["mean"] + TARGET_MARGIN,
        f"default fit <= {TARGET_FIT_SECONDS:.0f} s": max(r["seconds"]["ours"] for r in runs) <= TARGET_FIT_SECONDS,
    }
    return out


def markdown(result: dict) -> str:
    s, meta = result["summary"], result["meta"]
    kinds = [*TEXTURE_DEFECTS, "mean"]
    lines = ["# Images: texture defects, anomaly maps, images per second", "",
             "Generated by `python -m benchmarks.images --md benchmarks/IMAGES.md`; do not edit by hand.", "",
             f"- Date: {meta['date']}; seeds 0-{meta['seeds'] - 1}; {meta['machine']}, {meta['cpus']} CPU cores, "
             f"torch {meta['torch']}, {meta['threads']} thread(s)",
             "- Task: `texture_defects()`: 600 normal 32x32 grey patches of one photograph for training; the test "
             "set has 200 normal patches from a disjoint part of it and 50 per defect kind. Every model at its "
             "defaults, the same data and seed.",
             "- Mean ± std over seeds.", "", "## Image AUROC per defect kind", "",
             "| model | " + " | ".join(kinds) + " | s/fit |", "|---|" + "---|" * (len(kinds) + 1)]
    for name, row in sorted(s["auroc"].items(), key=lambda kv: -kv[1]["mean"]["mean"]):
        fit = s["seconds"].get(name)
        lines.append(f"| {name} | " + " | ".join(f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in kinds)
                     + f" | {fit['mean']:.1f} |" if fit else f"| {name} | "
                     + " | ".join(f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in kinds) + " | - |")
    lines += ["", "`z-score`: per-pixel z-score against the training images, max over the image. `high-pass energy`: "
              "a hand-made texture score (squared local detail of the input, the detector's window pooling). "
              "`LAPGAN`: `LaplacianPyramidDetector()` defaults.", "", "## Targets", "",
              "| target | met |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'no'} |" for k, v in s["targets"].items()]
    lines += ["", "## Generator fidelity", "",
              "`test_*`: against the 200 normal test patches (never seen in training nor in choosing the generator "
              "kept; `test_fidelity_of_real_patches`: training patches in place of generated ones); the others: "
              "the fit's held-out patches, which also chose the generator kept. `reverse_density` below 1: the "
              "generated patches are narrower than the texture.", "",
              "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v['mean']:.3f} ± {v['std']:.3f} |" for k, v in s["fidelity"].items()]
    lines += ["", "## Anomaly maps: pixel AUROC and PRO (FPR <= 0.3) per defect kind", "",
              "| map | " + " | ".join(f"{k} pixel AUROC | {k} PRO" for k in TEXTURE_DEFECTS) + " |",
              "|---|" + "---|" * (2 * len(TEXTURE_DEFECTS))]
    for name, row in s["pixel"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[k]['pixel_auroc']['mean']:.3f} | {row[k]['pro']['mean']:.3f}"
                                                  for k in TEXTURE_DEFECTS) + " |")
    if result.get("throughput"):
        lines += _speed_lines(result["throughput"], s)
    if result.get("folders"):
        lines += ["", "## Scoring a folder of PNG files (`gananomaly score --input FOLDER`, fresh process each)", "",
                  "| files | size | images/s | peak RSS MiB |", "|---|---|---|---|"]
        lines += [f"| {r['files']} | {r['size']} | {r['images_per_s']:.0f} | {r['peak_rss_mib']:.0f} |"
                  for r in result["folders"]]
    return "\n".join(lines) + "\n"


def _speed_lines(rows: list[dict], summary: dict) -> list[str]:
    """Images/s of the defaults and the options, and the options' quality beside their speed."""
    lines = ["", "## Images per second (conv detector, random grey images)", "",
             "Training: steady state of the training steps (GAN and encoder epochs; a fit's fixed costs "
             "and the process's one-time costs excluded), batch 64.", "",
             "| model | size | threads | train images/s | score images/s |", "|---|---|---|---|---|"]
    lines += [f"| {r.get('model', 'defaults')} | {r['size']} | {r['threads']} | {r['train_images_per_s']:.0f} | "
              f"{r['score_images_per_s']:.0f} |" for r in rows]
    base = {r["size"]: r["train_images_per_s"] for r in rows if r.get("model", "defaults") == "defaults"
            and r["threads"] == 1}
    options = [name for name in summary.get("option_fidelity", {}) if name in summary["auroc"]]
    if options and base:
        sizes = sorted(base)
        lines += ["", "## Faster options: quality and fidelity beside speed (1 thread)", "",
                  "| model | mean AUROC | noise AUROC | test fidelity | test reverse density | "
                  + " | ".join(f"train x {s}" for s in sizes) + " |", "|---|---|---|---|---|" + "---|" * len(sizes)]
        fid = {"ours": summary["fidelity"], **summary["option_fidelity"]}
        for name in ["ours", *options]:
            model = "defaults" if name == "ours" else name
            speed = {r["size"]: r["train_images_per_s"] for r in rows if r.get("model") == model and r["threads"] == 1}
            a = summary["auroc"][name]
            measure = {k: f"{fid[name][k]['mean']:.3f}" if k in fid[name] else "–"
                       for k in ("test_fidelity", "test_reverse_density")}
            lines.append(f"| {name} | {a['mean']['mean']:.3f} | {a['noise']['mean']:.3f} | "
                         f"{measure['test_fidelity']} | {measure['test_reverse_density']} | "
                         + " | ".join(f"{speed.get(s, float('nan')) / base[s]:.2f}" for s in sizes) + " |")
    return lines


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(seeds: int = 3, *, quick: bool = False, speed: bool = True, folders=(10_000, 100_000), options: bool = True,
        say=print) -> dict:
    sizes = dict(n_train=200, n_test_normal=40, n_per_defect=10) if quick else {}
    runs = []
    for seed in range(seeds):
        runs.append(texture_quality(seed, options=options, **sizes))
        a = runs[-1]["auroc"]
        say(f"seed {seed}: " + ", ".join(f"{name} {row['mean']:.3f}" for name, row in a.items())
            + f"; fit {runs[-1]['seconds']['ours']:.1f} s")
    result = {"meta": {"date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "seeds": seeds,
                       "machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "quick": quick},
              "runs": runs, "summary": summarise(runs)}
    if speed:
        result["throughput"] = throughput(n_images=128 if quick else 1024, options=options)
    if folders:
        result["folders"] = folder_scale(folders)
        say("folders: " + ", ".join(f"{r['files']} files {r['images_per_s']:.0f}/s {r['peak_rss_mib']:.0f} MiB"
                                    for r in result["folders"]))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.images")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--md", default=None, help="also write a Markdown report here")
    parser.add_argument("--quick", action="store_true", help="a small task: a smoke test of the harness")
    parser.add_argument("--no-speed", action="store_true", help="skip the images-per-second measurement")
    parser.add_argument("--no-options", action="store_true",
                        help="skip the faster training options (bf16, width 8) beside the defaults")
    parser.add_argument("--folders", default="10000,100000",
                        help="file counts of the generated folders scored by the batch job ('' to skip)")
    parser.add_argument("--folders-only", action="store_true",
                        help="measure only the folders and merge them into --out's images.json")
    parser.add_argument("--speed-only", action="store_true",
                        help="measure only the images per second and merge them into --out's images.json")
    args = parser.parse_args(argv)
    folders = tuple(int(v) for v in args.folders.split(",") if v.strip())
    if args.folders_only or args.speed_only:  # measure one part again, keep the rest of the last results
        result = json.loads((Path(args.out) / "images.json").read_text())
        if args.folders_only:
            result["folders"] = folder_scale(folders)
        if args.speed_only:
            result["throughput"] = throughput(options=not args.no_options)
    else:
        result = run(args.seeds, quick=args.quick, speed=not args.no_speed, folders=folders,
                     options=not args.no_options)
    # the measurements first: a report that fails to render must not lose them
    _write_atomic(Path(args.out) / "images.json", json.dumps(result, indent=2))
    text = markdown(result)
    print(text)
    if args.md:
        _write_atomic(Path(args.md), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
