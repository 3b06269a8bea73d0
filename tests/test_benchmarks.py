"""The benchmark harness: data sets, aggregation, report, and the whole ``--quick`` run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import datasets, quality, report


@pytest.mark.parametrize("name", [*datasets.REAL, *datasets.GENERATED, *datasets.STRESS])
def test_split_is_a_novelty_task(name):
    split = datasets.load(name, 0)
    assert split.X_train.ndim == 2 and split.X_test.shape[1] == split.X_train.shape[1]
    assert set(np.unique(split.y_test)) == {0, 1}
    assert np.isfinite(split.X_train).all() and np.isfinite(split.X_test).all()
    # No training row appears among the test rows.
    train_rows = {row.tobytes() for row in split.X_train}
    assert not any(row.tobytes() in train_rows for row in split.X_test)
    # Seeds change the split, not the task.
    other = datasets.load(name, 1)
    assert other.X_train.shape == split.X_train.shape
    assert not np.array_equal(other.X_train, split.X_train)
    assert datasets.load(name, 0).X_test.tobytes() == split.X_test.tobytes()


def test_the_dense_cluster_set_fails_a_global_density_and_not_a_local_one():
    """The stress set exists to catch a detector whose density is global (a k-NN distance): such
    a score must fail it, and a local one (LOF) must not, or it could not tell them apart."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    for seed in (1, 2):
        split = datasets.load("dense_cluster", seed)
        dist = NearestNeighbors(n_neighbors=5).fit(split.X_train).kneighbors(split.X_test)[0].mean(1)
        lof = -LocalOutlierFactor(novelty=True).fit(split.X_train).score_samples(split.X_test)
        assert roc_auc_score(split.y_test, dist) < 0.6 < 0.95 < roc_auc_score(split.y_test, lof)


def test_unknown_dataset_is_named():
    with pytest.raises(KeyError, match="nope"):
        datasets.load("nope", 0)


def test_fixed_split_alias_moves_only_the_model_seed():
    a, b = datasets.load("iris@split0", 3), datasets.load("iris", 0)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.name == "iris@split0"
    assert not np.array_equal(datasets.load("iris", 3).X_train, b.X_train)


def test_std_target_uses_the_fixed_split_rows_when_present():
    runs = _fake_runs()
    for r in [dict(r) for r in runs if r["dataset"] == "a"]:
        r["dataset"] = "a@split0"
        r["auroc"] = 0.95 + 0.001 * r["seed"]
        runs.append(r)
    summary = quality.summarise(runs)
    res = {"quality": {"summary": summary, "leaderboard_real": quality.leaderboard(summary, ["a", "b"]),
                       "real_datasets": ["a", "b"], "generated_datasets": [], "runs": runs, "errors": []}}
    std = next(t for t in report.targets(res) if t["name"] == "auroc_std")
    assert std["status"] == "met" and "split fixed" in std["measured"]
    assert "Model seeds only" in "\n".join(report._fixed_split_md(res["quality"]))


def test_mode_coverage_counts_the_mixture_modes_a_generator_reaches():
    from benchmarks.contestants import _mode_coverage

    class Sampler:
        def __init__(self, rows):
            self.rows = rows

        def generate(self, n, random_state=None):
            return self.rows[:n]

    real = datasets.load("gen_local", 1).X_train
    assert _mode_coverage(Sampler(real), 0, 500) == {"modes_covered": 3.0, "on_mode": pytest.approx(0.984, abs=0.02)}
    blob = np.repeat(real.mean(0, keepdims=True), 500, axis=0)  # a collapsed generator
    assert _mode_coverage(Sampler(blob), 0, 500)["modes_covered"] == 1.0


def _fake_runs() -> list[dict]:
    runs = []
    for ds in ("a", "b"):
        for seed in range(3):
            for name, family, column, auroc in (("ours gan/izif", "ours", "combined", 0.9),
                                                ("ours gan/izif", "ours", "reconstruction", 0.8),
                                                ("IsolationForest", "sklearn", "score", 0.7)):
                runs.append({"dataset": ds, "seed": seed, "contestant": name, "family": family, "column": column,
                             "main": column in ("combined", "score"), "auroc": auroc + 0.01 * seed,
                             "auprc": 0.5, "fit_s": 1.0})
    return runs


def test_summary_and_leaderboard():
    summary = quality.summarise(_fake_runs())
    row = next(s for s in summary if s["dataset"] == "a" and s["entry"] == "ours gan/izif [combined]")
    assert row["n_seeds"] == 3
    assert row["auroc_mean"] == pytest.approx(0.91)
    assert row["auroc_std"] == pytest.approx(np.std([0.9, 0.91, 0.92]))
    board = quality.leaderboard(summary, ["a", "b"])
    assert [r["entry"] for r in board] == ["ours gan/izif [combined]", "ours gan/izif [reconstruction]",
                                           "IsolationForest"]
    assert quality.leaderboard(summary, ["a", "missing"]) == []


def test_report_renders_partial_results():
    summary = quality.summarise(_fake_runs())
    results = {
        "meta": {"date_utc": "now", "quick": True, "machine": "test", "python": "3", "torch": "t", "torch_threads": 1,
                 "sklearn": "s", "pyod": None, "gananomaly": "g", "load_average_at_start": [0.0, 0.0, 0.0],
                 "seeds": [0, 1, 2], "peer_epochs": {}, "note": ""},
        "quality": {"runs": _fake_runs(), "errors": [], "summary": summary, "datasets": [],
                    "leaderboard_real": quality.leaderboard(summary, ["a", "b"]), "leaderboard_generated": [],
                    "real_datasets": ["a", "b"], "generated_datasets": []},
        "gpu": {"measured": False, "note": "not measured: no GPU in this session"},
    }
    results["targets"] = report.targets(results)
    by_name = {t["name"]: t for t in results["targets"]}
    assert by_name["auroc_vs_best_peer"]["status"] == "met"
    assert by_name["cpu_scoring"]["status"] == "n/a"
    md = report.markdown(results)
    assert "not measured: no GPU in this session" in md
    assert "0.910 ± 0.008 (3)" in md
    assert "IsolationForest" in report.console(results)


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, monkeypatch):
    from benchmarks import speed
    from benchmarks.__main__ import QUICK, main

    # The whole harness on smaller inputs: the two data sets the checks below read, and
    # speed/memory sizes and timed fits that exercise every section in seconds.
    for key, value in (("speed_sizes", (500, 2_000)), ("fit_sizes", (300,)), ("memory_sizes", (5_000,)),
                       ("refine_rows", (500, 50))):
        monkeypatch.setitem(QUICK, key, value)
    monkeypatch.setattr(speed, "FIT_ROWS", 1_000)
    monkeypatch.setattr(speed, "MEMORY_FIT_ROWS", 500)
    monkeypatch.setattr(speed, "FIT_EPOCHS", 2)
    md_path = tmp_path / "RESULTS.md"
    # every contestant the checks below read (the WGAN-GP variant is left to the full runs)
    contestants = "ours gan/izif,ours old-default,KNN,IsolationForest,LOF,OneClassSVM"
    assert main(["run", "--quick", "--datasets", "breast_cancer,gen_local", "--contestants", contestants,
                 "--out", str(tmp_path), "--results-md", str(md_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert md_path.read_text().startswith("# Benchmark results")
    assert {"meta", "speed", "refinement", "memory", "gpu", "quality", "targets"} <= set(results)

    q = results["quality"]
    assert q["runs"], q["errors"]
    for r in q["runs"]:
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["auprc"] <= 1.0
        assert r["fit_s"] >= 0
    contestants = {r["contestant"] for r in q["runs"]}
    assert {"ours gan/izif", "ours old-default", "KNN(k=5)", "IsolationForest", "LOF(novelty)",
            "OneClassSVM"} <= contestants
    ours_bc = [s for s in q["summary"]
               if s["dataset"] == "breast_cancer" and s["entry"] == "ours gan/izif [combined]"]
    assert ours_bc and ours_bc[0]["auroc_mean"] > 0.9  # the demo data
    assert ours_bc[0]["n_seeds"] >= 2
    # every fit of ours records what its generator learned; on the generated mixture the
    # default's generator is far closer to the data than the old default's (WGAN-GP for
    # ~500 critic steps), which this number would have caught
    fid = {s["contestant"]: s for s in q["summary"] if s["dataset"] == "gen_local" and s["column"] == "combined"}
    assert fid["ours gan/izif"]["gen_fidelity"] >= 0.8
    assert fid["ours gan/izif"]["gen_fidelity"] >= fid["ours old-default"]["gen_fidelity"] + 0.2
    # ...and on the normal test rows, which neither trained nor chose the generator
    assert fid["ours gan/izif"]["gen_test_fidelity"] >= fid["ours old-default"]["gen_test_fidelity"] + 0.2
    assert 0 < fid["ours gan/izif"]["gen_test_reverse_density"] <= 2
    assert "Generator fidelity on normal rows it was not trained on" in md_path.read_text()

    sp = results["speed"]
    assert [r["n_rows"] for r in sp["score"]] == [500, 2_000]
    assert [r["n_rows"] for r in sp["fit"]] == [300] and sp["fit_rows_for_scoring"] == 1_000
    for r in sp["score"]:
        assert r["ours_rows_per_s"] > 0 and r["iforest_rows_per_s"] > 0 and r["ratio_ours_over_iforest"] > 0
    for r in sp["fit"]:
        assert r["ours_s"] > 0 and r["iforest_s"] > 0
    assert results["refinement"]["ours"]["rows_per_s"] > 0
    if results["refinement"]["pyod_anogan"] is not None:
        assert results["refinement"]["ratio_ours_over_anogan"] > 0
    assert all(m.get("peak_rss_mib", 0) > 0 for m in results["memory"]), results["memory"]
    assert [m["n_rows"] for m in results["memory"]] == [5_000, 5_000]
    assert results["gpu"]["measured"] in (True, False)
    assert {t["name"] for t in results["targets"]} == set(report.TARGETS)


def test_merge_unites_runs_split_over_processes():
    from benchmarks.__main__ import merge

    runs = _fake_runs()
    meta = {"seeds": [0, 1, 2]}

    def part(rs, speed=None):
        summary = quality.summarise(rs)
        out = {"meta": meta, "quality": {"runs": rs, "errors": [], "summary": summary,
                                         "datasets": [{"name": "a"}], "real_datasets": ["a", "b"],
                                         "generated_datasets": [], "leaderboard_real": []}}
        if speed is not None:
            out["speed"] = speed
        return out

    first = [r for r in runs if r["seed"] < 2]
    second = [r for r in runs if r["seed"] >= 1]  # seed 1 in both parts: counted once
    merged = merge([part(first, speed={"score": []}), part(second)])
    assert merged["speed"] == {"score": []}
    assert len(merged["quality"]["runs"]) == len(runs)
    assert merged["meta"]["seeds"] == [0, 1, 2]
    top = merged["quality"]["leaderboard_real"][0]
    assert top["entry"] == "ours gan/izif [combined]" and top["n_seeds"] == 3


def test_contestant_filter_runs_only_the_named_detectors():
    """``--contestants``: a run split by detector runs each one in exactly one part."""
    options = {"quick": True, "sweep": False, "peer_epochs": {}, "only": ["isolationforest", "LOF"]}
    out = quality.run_quality(["wine"], [0], options, jobs=1)
    assert {r["contestant"] for r in out["runs"]} == {"IsolationForest", "LOF(novelty)"}
    assert not out["errors"]
    assert all(0.5 < r["auroc"] <= 1.0 for r in out["runs"])
    # "=NAME" picks that contestant alone, not the variants whose names extend it
    assert quality._named("=ours gan/izif", "Ours gan/izif")
    assert not quality._named("=ours gan/izif", "ours gan/izif two-time-scale")
    assert quality._named("ours gan/izif", "ours gan/izif two-time-scale")


def test_lapgan_report_pairs_both_models_per_task(tmp_path):
    from benchmarks.lapgan import _write_md

    rows = [{"task": t, "anomaly": a, "model": m, "auroc_mean": v, "auroc_std": 0.01, "seconds_per_fit": s}
            for t, a, m, v, s in (("digits:0", "other digits", "conv (single scale)", 0.99, 9.0),
                                  ("digits:0", "other digits", "LAPGAN (3 levels)", 0.97, 2.0),
                                  ("texture", "spot", "conv (single scale)", 0.9, 30.0),
                                  ("texture", "spot", "LAPGAN (3 levels)", 0.8, 5.0))]
    path = tmp_path / "LAPGAN.md"
    _write_md(path, rows, seeds=3, started="now")
    text = path.read_text()
    assert "| digits:0 | other digits | 0.990 ± 0.010 | 0.970 ± 0.010 | 9.0 | 2.0 |" in text
    assert "| texture | spot | 0.900 ± 0.010 | 0.800 ± 0.010 | 30.0 | 5.0 |" in text
    assert "seeds 0-2" in text and not list(tmp_path.glob(".*tmp"))


def test_scoring_benchmark_writes_table_and_json_per_thread_count(tmp_path):
    from benchmarks.__main__ import main

    assert main(["scoring", "--rows", "3000", "--fit-rows", "300", "--threads", "1,2", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "speed_scoring.json").read_text())
    assert [r["threads"] for r in result["rows"]] == [1, 2] and result["knn_bank_rows"] == 300
    for r in result["rows"]:
        assert r["ours_rows_per_s"] > 0 and r["iforest_rows_per_s"] > 0
        assert r["ratio_ours_over_iforest"] == pytest.approx(r["ours_rows_per_s"] / r["iforest_rows_per_s"])
        assert set(r["parts_s"]) == {"networks", "latent", "knn", "other"}
        assert all(v >= 0 for v in r["parts_s"].values()) and r["parts_s"]["networks"] > 0
    md = (tmp_path / "speed_scoring.md").read_text()
    assert "| threads | ours rows/s | IsolationForest rows/s | ratio | networks | latent | knn | other |" in md
    assert md.count("\n| 1 | ") == 1 and md.count("\n| 2 | ") == 1
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        main(["scoring", "--threads", "0", "--out", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()


def test_cli_startup_benchmark_times_each_command_against_bare_python(tmp_path):
    from benchmarks.__main__ import main

    assert main(["cli", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "cli_startup.json").read_text())
    commands = [r["command"] for r in result["commands"]]
    assert commands[:2] == ["gananomaly --version", "gananomaly --help"] and "gananomaly score --help" in commands
    assert all(r["seconds"] > 0 and r["over_python_s"] == r["seconds"] - result["python_startup_s"]
               for r in result["commands"])
    assert "| `gananomaly score --help` |" in (tmp_path / "cli_startup.md").read_text()


def test_image_speed_report_sets_each_option_beside_the_defaults_one_thread_figure():
    from benchmarks.images import _speed_lines

    def row(model, threads, train):
        return {"model": model, "size": "32x32", "threads": threads, "train_images_per_s": train,
                "score_images_per_s": 1.0}

    rows = [row("defaults", 1, 1000.0), row("defaults", 2, 1800.0), row("fast", 1, 2500.0)]
    ms = {"mean": {"mean": 0.9}, "noise": {"mean": 0.8}}
    summary = {"auroc": {"ours": ms, "fast": ms},
               "fidelity": {"test_fidelity": {"mean": 0.7}, "test_reverse_density": {"mean": 0.6}},
               "option_fidelity": {"fast": {"test_fidelity": {"mean": 0.2}, "test_reverse_density": {"mean": 0.1}}}}
    text = "\n".join(_speed_lines(rows, summary))
    assert "| ours | 0.900 | 0.800 | 0.700 | 0.600 | 1.00 |" in text  # the 2-thread row is not the base
    assert "| fast | 0.900 | 0.800 | 0.200 | 0.100 | 2.50 |" in text


def test_fidelity_target_needs_the_parzen_gap_too():
    """k-NN fidelity alone passed a generator that draws each column independently now and
    then; the target also asks for the Parzen gap, which such a generator fails."""
    from benchmarks.report import DEFAULT_ENTRY, targets

    def result(fidelity, gap):
        row = {"entry": DEFAULT_ENTRY, "dataset": "gen_dependency", "gen_fidelity": 1.0, "gen_test_fidelity": fidelity,
               "gen_parzen_gap": gap, "auroc_mean": 0.9, "auroc_std": 0.01, "n_seeds": 5}
        return {"quality": {"summary": [row]}}

    status = {case: next(t for t in targets(result(*case)) if t["name"] == "fidelity")["status"]
              for case in [(1.0, -0.1), (0.92, -1.4), (0.85, -0.1)]}
    assert status[(1.0, -0.1)] == "met"
    assert status[(0.92, -1.4)] != "met" and status[(0.85, -0.1)] != "met"


def test_image_reports_render_results_without_the_test_fidelity():
    """An images.json written before the test-set fidelity existed (what --speed-only and
    --folders-only reload) still summarises and renders, the missing measures as a dash."""
    from benchmarks.images import _speed_lines, summarise

    old_run = {"auroc": {"ours": {k: 0.9 for k in ("scratch", "spot", "noise", "foreign", "mean")},
                         "IsolationForest": {k: 0.7 for k in ("scratch", "spot", "noise", "foreign", "mean")}},
               "pixel": {}, "seconds": {"ours": 13.0}, "fidelity": {"fidelity": 0.74, "coverage": 0.6},
               "option_fidelity": {"fast": {"fidelity": 0.5, "coverage": 0.4}}}
    summary = summarise([old_run, old_run])
    assert "test_fidelity" not in summary["fidelity"] and summary["fidelity"]["fidelity"]["mean"] == 0.74
    rows = [{"model": "defaults", "size": "32x32", "threads": 1, "train_images_per_s": 1000.0,
             "score_images_per_s": 1.0},
            {"model": "fast", "size": "32x32", "threads": 1, "train_images_per_s": 2000.0, "score_images_per_s": 1.0}]
    summary["auroc"]["fast"] = summary["auroc"]["ours"]
    text = "\n".join(_speed_lines(rows, summary))
    assert "| fast | 0.900 | 0.900 | – | – | 2.00 |" in text


def test_real_patch_ceiling_treats_the_test_patches_as_the_real_rows():
    """Coverage is not symmetric: the ceiling must be oriented as generator_fidelity (test
    patches real, training patches in the generated rows' place)."""
    from benchmarks.images import real_patch_ceiling
    from gananomaly.fidelity import manifold_metrics

    rng = np.random.RandomState(0)
    train, test = rng.randn(200, 16), np.r_[rng.randn(150, 16), 4 + rng.randn(50, 16)]
    assert manifold_metrics(test, train)["fidelity"] != manifold_metrics(train, test)["fidelity"]
    assert real_patch_ceiling(train, test) == manifold_metrics(test, train)["fidelity"]


def test_fidelity_target_needs_every_generated_set_measured_on_test_rows():
    from benchmarks.report import DEFAULT_ENTRY, targets

    def row(name, test):
        r = {"entry": DEFAULT_ENTRY, "dataset": name, "gen_fidelity": 1.0, "gen_parzen_gap": 0.0,
             "auroc_mean": 0.9, "auroc_std": 0.01, "n_seeds": 5}
        return dict(r, gen_test_fidelity=test) if test is not None else r

    fid = next(t for t in targets({"quality": {"summary": [row("gen_local", 0.95), row("gen_global", None)]}})
               if t["name"] == "fidelity")
    assert fid["status"] == "n/a" and "not measured on gen_global" in fid["measured"]


def test_merge_refuses_results_of_different_fidelity_definitions():
    from benchmarks.__main__ import merge

    def part(version):
        run = {"dataset": "a", "seed": 0, "contestant": "ours gan/izif", "column": "combined", "auroc": 0.9,
               "auprc": 0.5, "fit_s": 1.0, "family": "ours", "main": True, "order": 0, "gen_fidelity": 0.9}
        if version is not None:
            run["gen_fidelity_measure"] = version
        return {"meta": {}, "quality": {"runs": [run], "errors": [], "datasets": [], "real_datasets": ["a"],
                                        "generated_datasets": []}}

    with pytest.raises(ValueError, match="different definitions"):
        merge([part(2), part(None)])
    assert merge([part(2), part(2)])["quality"]["runs"]


def test_fidelity_cases_show_what_the_reverse_density_adds():
    from benchmarks.fidelity_cases import markdown, run

    result = run(dims=(30,))
    narrow, real = result["cases"]["0.6x the spread"]["30"], result["cases"]["real samples (N(0, I))"]["30"]
    assert narrow["before"] > 0.95 and narrow["fidelity"] < 0.1  # blind before, caught now
    assert real["fidelity"] > 0.85
    assert "| 0.6x the spread | 1.00 -> 0.0" in markdown(result)


@pytest.mark.filterwarnings("ignore::UserWarning")  # a two-epoch fit is not meant to be faithful
def test_refined_columns_without_steps_are_the_detectors_own_combined_score():
    """The refined combined column standardised the k-NN term's raw distance: it dropped the
    local half of the term, so "refine10 vs combined" compared two changes at once."""
    from benchmarks.contestants import _refined_columns
    from gananomaly import GANAnomalyDetector

    split = datasets.load("gen_local", seed=0)
    det = GANAnomalyDetector(epochs=2, encoder_epochs=1, random_state=0).fit(split.X_train)
    assert det.score_config_.knn_own is not None  # the default's k-NN term is half local
    cols = _refined_columns(det, split, 0)
    np.testing.assert_allclose(cols["refine0 combined"], det.score_components(split.X_test)["combined"],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["flip", "hotcold", "machines5"])
def test_each_contextual_anomaly_is_normal_for_some_other_context(name):
    """The context benchmark's data: a detector blind to the context cannot tell the anomalies
    (each is an ordinary reading of another context), one fitted per context can."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from benchmarks import context
    from benchmarks.contestants import KNNDetector

    split = context.GENERATORS[name](0)
    assert split.y_test.mean() == pytest.approx(0.2, abs=0.01) and set(split.c_test) == set(split.c_train)
    scaler = StandardScaler().fit(split.X_train)
    blind = -KNNDetector().fit(scaler.transform(split.X_train)).score_samples(scaler.transform(split.X_test))
    told = context._anomaly_scores("KNN per context", split, 0)
    assert roc_auc_score(split.y_test, blind) <= 0.7
    assert roc_auc_score(split.y_test, told) >= 0.9


def test_context_benchmark_table_has_a_row_per_detector_and_a_column_per_data_set():
    from benchmarks import context

    rows = [{"dataset": d, "seed": s, "detector": det, "auroc": 0.9, "auroc_smallest_context": 0.8}
            for d in context.DATASETS for s in (0, 1) for det in context.DETECTORS]
    text = context.markdown({"seeds": [0, 1], "machine": "x86_64", "date_utc": "now", "rows": rows})
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(context.DETECTORS)
    assert table[0] == "| detector | flip | hotcold | machines5 |"
    assert "| KNN per context | 0.900 ± 0.000 (0.800) |" in text
