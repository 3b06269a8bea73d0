"""benchmarks/batch.py: ours and the baseline on one generated file, the JSON and the table."""

import json

from benchmarks import batch


def test_batch_benchmark_measures_both_contestants_and_writes_json_and_table(tmp_path):
    args = batch.argparse.Namespace(sizes="600", chunk_rows=250, explain=0, profile=False, out=str(tmp_path),
                                    md=str(tmp_path / "BATCH.md"))
    assert batch.run_args(args, detector={"epochs": 1, "encoder_epochs": 1, "hidden_dims": [16], "latent_dim": 4}) == 0
    result = json.loads((tmp_path / "batch.json").read_text())
    (run,) = result["runs"]
    assert run["n_rows"] == 600 and run["ours"]["rows"] == 600 and run["baseline"]["rows"] == 600
    for who in ("ours", "baseline"):
        assert run[who]["rows_per_s"] > 0 and run[who]["peak_rss_mb"] >= run[who]["base_rss_mb"] > 0
    assert abs(run["ratio"] - run["ours"]["rows_per_s"] / run["baseline"]["rows_per_s"]) < 1e-9
    table = (tmp_path / "BATCH.md").read_text()
    assert "| 600 |" in table and f"{run['ratio']:.2f}" in table
