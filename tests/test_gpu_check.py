"""The prepared GPU check (benchmarks/gpu.py), exercised as a dry run on the CPU."""

import json
import math

import pytest
import torch

from benchmarks import gpu

STEP_NAMES = [name for name, _, _ in gpu.STEPS]


def _load(out):
    results = json.loads((out / "gpu.json").read_text())
    md = (out / "GPU.md").read_text()
    return results, md


def test_dry_run_records_every_step_with_a_figure_or_a_reason(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert gpu.main(["--dry-run", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads
    results, md = _load(tmp_path)
    assert results["meta"]["dry_run"] is True and results["meta"]["device"] == "cpu"
    assert results["plan"]["dry_run"] is True
    assert [s["name"] for s in results["steps"]] == STEP_NAMES
    for step in results["steps"]:
        if step["status"] == "skipped":
            assert step["reason"], step
            continue
        assert step["status"] == "ok", step
        assert step["figures"], step
        for fig in step["figures"]:
            assert fig["met"] is None  # targets are for a GPU: not judged in a dry run
            if fig.get("skipped"):
                continue
            assert math.isfinite(fig["value"]), fig
            if fig["unit"] in ("rows/s", "images/s", "s"):
                assert fig["value"] > 0, fig
    steps = {s["name"]: s for s in results["steps"]}
    assert steps["cuda_tests"]["details"]["counts"]["collected"] >= 1  # collect-only in a dry run
    assert any("cuda" in t for t in steps["cuda_tests"]["details"]["tests"])
    assert steps["nccl"]["status"] == "skipped"
    names = [f["name"] for f in steps["tabular_scoring"]["figures"]]
    for precision in ("bf16", "fp32"):
        assert sum(f"rows/s, {precision}," in n for n in names) == len(gpu.DRY.score_sizes)
    assert any(n.startswith("AUROC bf16 - fp32") for n in names)
    conv = [f["name"] for f in steps["conv"]["figures"]]
    assert "conv scoring images/s, 64x64" in conv and "conv training images/s, 32x32" in conv
    assert gpu.TABLE_HEADER in md and "dry run" in md
    assert gpu.TABLE_HEADER in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def test_tiny_budget_skips_every_step_after_the_first(tmp_path):
    assert gpu.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "0.001"]) == 0
    results, md = _load(tmp_path)
    steps = results["steps"]
    assert [s["name"] for s in steps] == STEP_NAMES
    assert steps[0]["status"] in ("ok", "timed_out")
    for step in steps[1:]:
        assert step["status"] == "skipped" and step["reason"], step
    assert "budget of 0.001 s spent" in steps[1]["reason"]
    assert gpu.TABLE_HEADER in md and "skipped" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the automatic dry run without CUDA")
def test_no_gpu_means_an_automatic_dry_run_with_a_note(tmp_path):
    assert gpu.main(["--out", str(tmp_path), "--budget-s", "0.001"]) == 0
    results, md = _load(tmp_path)
    assert results["meta"]["dry_run"] is True and results["meta"]["device"] == "cpu"
    assert results["meta"]["note"] == "no CUDA device: dry run on CPU"
    assert "no CUDA device: dry run on CPU" in md


def test_benchmarks_command_has_the_gpu_subcommand(tmp_path):
    from benchmarks.__main__ import main

    assert main(["gpu", "--dry-run", "--out", str(tmp_path), "--budget-s", "0.001"]) == 0
    assert (tmp_path / "gpu.json").exists() and (tmp_path / "GPU.md").exists()
    with pytest.raises(SystemExit):
        main(["gpu", "--budget-s", "0"])


def test_parse_pytest_summary():
    run = "2 passed, 1 skipped, 401 deselected, 3 warnings in 40.10s"
    assert gpu.parse_pytest_summary(run) == {"passed": 2, "skipped": 1, "deselected": 401}
    assert gpu.parse_pytest_summary("1 failed, 1 passed, 1 error in 3s") == {"failed": 1, "passed": 1, "errors": 1}
    collected = gpu.parse_pytest_summary("a::b\n\n3/404 tests collected (401 deselected) in 6.35s")
    assert collected == {"collected": 3, "total": 404, "deselected": 401}


def test_markdown_judges_targets_off_a_dry_run_and_names_failed_steps():
    results = {
        "meta": {"dry_run": False, "date_utc": "today", "device": "cuda", "device_name": "H200",
                 "cuda_device_count": 1, "torch": "2", "cuda": "12", "git": "abc", "budget_s": 480,
                 "elapsed_s": 300.0, "note": None},
        "steps": [
            {"name": "tabular_scoring", "title": "tabular scoring", "status": "timed_out",
             "reason": "killed at its time box of 100.0 s",
             "figures": [{"name": "scoring rows/s, bf16, 10^7 rows", "value": 6e7, "unit": "rows/s",
                          "target": ">= 5e+07", "met": True},
                         {"name": "AUROC", "value": 0.02, "unit": "AUROC", "target": "abs(d) <= 0.01", "met": False},
                         {"name": "scoring rows/s, bf16, 10^8 rows", "value": None, "unit": "rows/s",
                          "target": ">= 5e+07", "met": None, "skipped": "projected 300 s > 20 s left"}]},
            {"name": "conv", "title": "conv images/s", "status": "failed", "reason": "RuntimeError: a | b\nmore",
             "figures": []},
        ],
    }
    md = gpu.markdown(results)
    assert "| tabular scoring | scoring rows/s, bf16, 10^7 rows: 6e+07 rows/s | >= 5e+07 | yes |" in md
    assert "| tabular scoring | AUROC: 0.02 AUROC | abs(d) <= 0.01 | no |" in md
    assert "skipped (projected 300 s > 20 s left)" in md
    assert "timed out: killed at its time box" in md
    assert "| conv images/s | failed: RuntimeError: a \\| b | - | - |" in md


@pytest.mark.slow
def test_two_process_step_launches_torchrun(tmp_path):
    """The NCCL step's launch and checks, run with gloo on the CPU (NCCL needs 2 GPUs)."""
    step = gpu._spawn("nccl", gpu.DRY, 240.0, tmp_path)
    assert step["status"] == "ok", step
    figures = {f["name"]: f for f in step["figures"]}
    assert figures["replicas in sync (weight digests equal)"]["value"] == 1.0
    assert "(gloo, DistributedDataParallel)" in step["details"]["stdout_tail"]
