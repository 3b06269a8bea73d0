"""Batch scoring: chunked streaming, atomic output, resume after SIGKILL, bad input, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gananomaly.pipelines.batch_files as batch_files
import gananomaly.pipelines.batch_score as bs
import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.batch_score import score_file, score_frame
from gananomaly.pipelines.cli import main
from gananomaly.pipelines.datasets import mixed_table
from gananomaly.pipelines.tabular import TabularConfig, fit_tabular, model_schema, prepare_frame

REPO = Path(__file__).resolve().parent.parent
# validation_fraction 0: no fidelity measurement (which these tests do not look at)
TINY = {"epochs": 3, "hidden_dims": (16,), "latent_dim": 4, "random_state": 0, "device": "cpu",
        "validation_fraction": 0}
COLUMNS = ["order_id", "discriminator", "reconstruction", "latent", "knn", "combined", "score", "label"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny fitted mixed-type pipeline saved to disk: (pipeline, model_dir)."""
    out = tmp_path_factory.mktemp("batch")
    cfg = TabularConfig(name="b", builtin="mixed", options={"n_samples": 300}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", detector=dict(TINY), mlflow=False)
    result = fit_tabular(cfg, output_dir=out)
    return result.pipeline, result.model_path


@pytest.fixture(scope="module")
def table():
    return mixed_table(500, random_state=11).drop(columns=["is_anomaly", "anomaly_kind"])


@pytest.fixture(scope="module")
def expected(model, table):
    pipe, _ = model
    X, _, _ = prepare_frame(table, model_schema(pipe))
    return pipe.score_samples(X), pipe.predict(X)


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"order_id": str}) if path.suffix == ".csv" else pd.read_parquet(path)


# ------------------------------------------------------------------------------ streaming
@pytest.mark.parametrize("fmt, chunk", [("parquet", 37), ("csv", 64), ("parquet", 10_000)])
def test_chunked_scores_equal_in_memory_scores(model, table, expected, tmp_path, fmt, chunk):
    _, model_dir = model
    inp = write(table, tmp_path / f"in.{fmt}")
    out = tmp_path / f"scores.{'csv' if fmt == 'parquet' else 'parquet'}"
    stats = score_file(model_dir, inp, out, id_column="order_id", chunk_rows=chunk)
    assert stats["chunks"] == -(-500 // chunk) and stats["rows_scored"] == 500 == stats["rows_read"]
    got = read(out)
    assert list(got.columns) == COLUMNS
    assert got["order_id"].tolist() == table["order_id"].tolist()
    np.testing.assert_allclose(got["score"].to_numpy(), expected[0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got["label"].to_numpy(), expected[1])
    np.testing.assert_allclose(got["combined"].to_numpy(), -expected[0], rtol=0, atol=1e-12)
    assert not Path(f"{out}.parts").exists()


def test_without_id_column_extra_columns_are_dropped_with_a_warning(model, table, tmp_path, caplog):
    _, model_dir = model
    inp = write(table.assign(note="x"), tmp_path / "in.parquet")
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", chunk_rows=200)
    assert stats["extra_columns"] == ["order_id", "note"]
    assert "ignoring column(s) the model does not use: ['order_id', 'note']" in caplog.text
    assert list(read(tmp_path / "s.parquet").columns) == COLUMNS[1:]
    with pytest.raises(ValueError, match=r"has column\(s\) \['note'\] that the model was not fitted on"):
        score_file(model_dir, inp, tmp_path / "t.parquet", id_column="order_id", extra_columns="error")
    assert not (tmp_path / "t.parquet").exists()


def test_bare_detector_scores_columns_by_name(tmp_path):
    from gananomaly import GANAnomalyDetector

    rng = np.random.RandomState(0)
    train = pd.DataFrame(rng.randn(200, 3), columns=["a", "b", "c"])
    det = GANAnomalyDetector(**TINY).fit(train)
    det.save(tmp_path / "det")
    test = pd.DataFrame(rng.randn(50, 3), columns=["c", "a", "b"])  # order differs: matched by name
    write(test, tmp_path / "in.parquet")
    score_file(tmp_path / "det", tmp_path / "in.parquet", tmp_path / "s.parquet", chunk_rows=16)
    np.testing.assert_array_equal(read(tmp_path / "s.parquet")["score"], det.score_samples(test[["a", "b", "c"]]))


# ------------------------------------------------------------------------------ atomic output
def test_error_mid_file_leaves_no_output_and_keeps_the_old_one(model, table, tmp_path):
    _, model_dir = model
    bad = table.copy()
    bad["amount"] = bad["amount"].astype(object)
    bad.loc[450, "amount"] = "12,50"  # in the last chunk: earlier chunks were already scored
    inp = write(bad, tmp_path / "in.csv")
    out = tmp_path / "scores.parquet"
    with pytest.raises(ValueError) as err:
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100)
    assert "column 'amount': rows 451" in str(err.value) and "'12,50'" in str(err.value)
    assert not out.exists()
    out.write_text("previous scores")
    with pytest.raises(ValueError):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100)
    assert out.read_text() == "previous scores"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_crash_while_assembling_leaves_no_partial_output(model, table, tmp_path, monkeypatch):
    _, model_dir = model
    inp = write(table, tmp_path / "in.parquet")
    out = tmp_path / "scores.csv"
    real = batch_files.concat_parts

    def crash(parts, tmp, fmt):
        real(parts[:2], tmp, fmt)  # a partial file exists at the temporary name...
        raise OSError("disk full")

    monkeypatch.setattr(batch_files, "concat_parts", crash)
    with pytest.raises(OSError, match="disk full"):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100)
    assert not out.exists()  # ...but never at the final path
    monkeypatch.setattr(batch_files, "concat_parts", real)
    stats = score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100, resume=True)
    assert stats["chunks_reused"] == 5 and len(read(out)) == 500


# ------------------------------------------------------------------------------ resume
def test_resume_reuses_committed_chunks_and_checks_the_manifest(model, table, expected, tmp_path, monkeypatch):
    _, model_dir = model
    inp = write(table, tmp_path / "in.parquet")
    out = tmp_path / "scores.parquet"
    real, calls = batch_files.write_part, []

    def fail_third(path, scores):
        calls.append(path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, scores)

    monkeypatch.setattr(batch_files, "write_part", fail_third)
    with pytest.raises(KeyboardInterrupt):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=60)
    monkeypatch.setattr(batch_files, "write_part", real)
    work = Path(f"{out}.parts")
    assert not out.exists() and sorted(p.name for p in work.glob("part-*.json")) == [
        "part-000000.json", "part-000001.json"]
    with pytest.raises(ValueError, match=r"cannot resume .*chunk_rows: 60 then, 50 now"):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=50, resume=True)
    stats = score_file(model_dir, inp, out, id_column="order_id", chunk_rows=60, resume=True)
    assert stats["chunks_reused"] == 2 and stats["chunks"] == 9 and stats["rows_scored"] == 500
    got = read(out)
    assert got["order_id"].tolist() == table["order_id"].tolist()
    np.testing.assert_allclose(got["score"], expected[0], rtol=0, atol=1e-12)
    assert not work.exists()


def test_changed_input_refuses_to_resume_and_plain_run_starts_over(model, table, tmp_path, monkeypatch):
    _, model_dir = model
    inp = write(table, tmp_path / "in.csv")
    out = tmp_path / "s.parquet"
    monkeypatch.setattr(batch_files, "concat_parts", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100)
    monkeypatch.undo()
    write(table.iloc[:400], inp)
    with pytest.raises(ValueError, match=r"cannot resume .*input_size"):
        score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100, resume=True)
    stats = score_file(model_dir, inp, out, id_column="order_id", chunk_rows=100)
    assert stats["chunks_reused"] == 0 and len(read(out)) == 400


def test_resume_after_sigkill_scores_every_row_exactly_once(model, table, expected, tmp_path):
    _, model_dir = model
    inp = write(table, tmp_path / "in.csv")
    out = tmp_path / "scores.parquet"
    work = Path(f"{out}.parts")
    env = dict(os.environ, **{bs.THROTTLE_ENV: "0.2", "PYTHONPATH": str(REPO)})
    cmd = [sys.executable, "-m", "gananomaly.pipelines.cli", "score", "--model", str(model_dir), "--input", str(inp),
           "--output", str(out), "--id-column", "order_id", "--chunk-rows", "25"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(list(work.glob("part-*.json"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the scoring process never committed a chunk"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(work.glob("part-*.json")))
    assert not out.exists() and 3 <= done < 20
    rc = main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
               "--id-column", "order_id", "--chunk-rows", "25", "--resume", "--no-progress"])
    assert rc == 0
    got = read(out)
    assert len(got) == 500 and got["order_id"].is_unique
    assert got["order_id"].tolist() == table["order_id"].tolist()
    np.testing.assert_allclose(got["score"], expected[0], rtol=0, atol=1e-12)
    assert not work.exists()


# ------------------------------------------------------------------------------ bad input
def test_missing_column_is_named(model, table, tmp_path):
    _, model_dir = model
    inp = write(table.drop(columns=["tier"]), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['tier'\] that the model needs"):
        score_file(model_dir, inp, tmp_path / "s.parquet")
    with pytest.raises(ValueError, match=r"no ID column 'id'"):
        score_file(model_dir, write(table, tmp_path / "ok.parquet"), tmp_path / "s.parquet", id_column="id")
    assert not (tmp_path / "s.parquet").exists()


def test_unparseable_values_skip_policy_counts_and_names_rows(model, table, expected, tmp_path):
    _, model_dir = model
    bad = table.copy()
    for col in ("amount", "customer_age"):
        bad[col] = bad[col].astype(object)
    bad.loc[6, "amount"] = "n/a?"
    bad.loc[250, "customer_age"] = "forty"
    bad.loc[251, "amount"] = "inf"
    inp = write(bad, tmp_path / "in.csv")
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id", chunk_rows=100,
                       on_bad_rows="skip")
    assert stats["n_skipped"] == 3 and stats["skipped_rows"] == [7, 251, 252]
    assert stats["bad_values"] == {"amount": 2, "customer_age": 1}
    got = read(tmp_path / "s.parquet")
    keep = np.ones(500, bool)
    keep[[6, 250, 251]] = False
    assert got["order_id"].tolist() == table["order_id"][keep].tolist()
    np.testing.assert_allclose(got["score"], expected[0][keep], rtol=0, atol=1e-12)


def test_wrong_column_type_is_named(model, table, tmp_path):
    _, model_dir = model
    inp = write(table.assign(amount=pd.Timestamp("2026-01-01")), tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"column 'amount' has type datetime64.*expects numbers"):
        score_file(model_dir, inp, tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()


def test_malformed_csv_lines_error_or_skip_with_row_numbers(model, table, tmp_path):
    _, model_dir = model
    inp = tmp_path / "in.csv"
    lines = table.to_csv(index=False).splitlines()
    lines[5] += ",surplus"  # data row 5 (line 6) has one field too many
    lines[300] += ",x,y"    # data row 300
    inp.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 6 \(the header is line 1\) is malformed: expected 9 fields, saw 10"):
        score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id", chunk_rows=100)
    assert not (tmp_path / "s.parquet").exists()
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id", chunk_rows=100,
                       on_bad_rows="skip")
    assert stats["malformed_rows"] == 2 and stats["skipped_rows"] == [5, 300] and stats["rows_read"] == 500
    got = read(tmp_path / "s.parquet")
    assert len(got) == 498
    assert not {table.order_id[4], table.order_id[299]} & set(got.order_id)


def test_row_numbers_after_a_skipped_line_stay_file_row_numbers(model, table, tmp_path):
    _, model_dir = model
    lines = table.head(40).to_csv(index=False).splitlines()
    lines[3] += ",surplus"  # row 3 malformed
    fields = lines[10].split(",")
    fields[list(table.columns).index("amount")] = "cheap"  # row 10: amount is not a number
    lines[10] = ",".join(fields)
    inp = tmp_path / "in.csv"
    inp.write_text("\n".join(lines) + "\n")
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id", chunk_rows=4,
                       on_bad_rows="skip")
    assert stats["skipped_rows"] == [3, 10] and stats["bad_values"] == {"amount": 1}


@pytest.mark.parametrize("content, fmt, message", [
    ("", "csv", "is empty"),
    ("order_id,amount\n", "csv", "no data rows"),
    (None, "parquet", "no data rows"),
    ("this is not parquet", "parquet", "not a readable Parquet file"),
])
def test_empty_or_unreadable_input_is_an_error(model, table, tmp_path, content, fmt, message):
    _, model_dir = model
    inp = tmp_path / f"in.{fmt}"
    if content is None:
        table.iloc[:0].to_parquet(inp)
    else:
        inp.write_text(content)
        if content.startswith("order_id"):
            inp.write_text(",".join(table.columns) + "\n")
    with pytest.raises(ValueError, match=message):
        score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id")
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "s.parquet.parts").exists()


def test_unseen_categories_are_counted_or_refused(model, table, tmp_path):
    _, model_dir = model
    df = table.copy()
    df.loc[[2, 480], "device"] = "smartwatch"
    inp = write(df, tmp_path / "in.parquet")
    stats = score_file(model_dir, inp, tmp_path / "s.parquet", id_column="order_id", chunk_rows=100)
    assert stats["unseen_categories"] == {"device": 2}
    assert stats["unseen_examples"]["device"] == [[3, "smartwatch"], [481, "smartwatch"]]
    # rows with a category never seen in training are outliers whatever their score (all-zero
    # one-hot codes can look normal); the other rows keep the model's label
    out = pd.read_parquet(tmp_path / "s.parquet").set_index("order_id")
    unseen_ids = df.loc[[2, 480], "order_id"]
    assert (out.loc[unseen_ids, "label"] == -1).all()
    rest = out.drop(index=unseen_ids)
    offset = bs.load_model(model_dir)[0][-1].offset_
    np.testing.assert_array_equal(rest["label"], np.where(rest["score"] < offset, -1, 1))
    with pytest.raises(ValueError, match=r"column 'device' has categories not seen in training in rows 3\b"):
        score_file(model_dir, inp, tmp_path / "t.parquet", unseen="error", id_column="order_id")
    assert not (tmp_path / "t.parquet").exists()


def test_score_frame_rejects_bad_policies(model, table):
    pipe, _ = model
    with pytest.raises(ValueError, match=r"on_bad_rows must be one of \['error', 'skip'\], got 'ignore'"):
        score_frame(pipe, table, on_bad_rows="ignore")


# ------------------------------------------------------------------------------ CLI
def test_cli_score_exit_codes(model, table, tmp_path, capsys):
    _, model_dir = model
    inp = write(table, tmp_path / "in.parquet")
    out = tmp_path / "s.csv"
    rc = main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
               "--id-column", "order_id", "--chunk-rows", "128", "--no-progress"])
    assert rc == 0 and "scored 500 of 500 rows" in capsys.readouterr().out
    assert list(read(out).columns) == COLUMNS
    assert main(["score", "--model", str(model_dir), "--input", str(tmp_path / "nope.csv"),
                 "--output", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path / "nomodel"), "--input", str(inp), "--output", str(out)]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(tmp_path / "s.json")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out), "--on-bad-rows", "drop"])
    assert exit_.value.code == 2


def test_threshold_chosen_at_scoring_time(model, table, expected, tmp_path):
    """`gananomaly score --threshold/--fpr/--contamination` moves this job's labels without
    touching the saved model; scores are unchanged; a different threshold is a different
    model for resume."""
    from gananomaly.pipelines.cli import main

    pipe, model_dir = model
    inp = write(table, tmp_path / "in.parquet")
    def files():
        return {p.name: p.read_bytes() for p in sorted(Path(model_dir).rglob("*")) if p.is_file()}

    before = files()
    cut = float(np.quantile(expected[0], 0.3))
    assert main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(tmp_path / "t.parquet"),
                 "--threshold", str(cut), "--no-progress"]) == 0
    out = read(tmp_path / "t.parquet")
    np.testing.assert_allclose(out["score"], expected[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(out["label"], np.where(out["score"] < cut, -1, 1))
    assert main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(tmp_path / "n.parquet"),
                 "--threshold", "nan", "--no-progress"]) == 2  # named as the option, not as 'score'
    assert not (tmp_path / "n.parquet").exists()
    loose = score_file(model_dir, inp, tmp_path / "f.parquet", threshold={"fpr": 0.4}, progress=False)
    strict = score_file(model_dir, inp, tmp_path / "g.parquet", threshold={"contamination": 0.01}, progress=False)
    assert loose["model_id"] != strict["model_id"]
    assert (read(tmp_path / "f.parquet")["label"] == -1).sum() > (read(tmp_path / "g.parquet")["label"] == -1).sum()
    assert files() == before and before
    with pytest.raises(ValueError, match="fpr"):
        score_file(model_dir, inp, tmp_path / "h.parquet", threshold={"fpr": 2.0})


# ------------------------------------------------------------------------------ explain, progress
def test_explain_names_the_broken_column_streamed_and_resume_refuses_another_k(model, table, tmp_path,
                                                                                monkeypatch):
    """--explain K: each row's K most responsible input columns. A break planted in one known
    column (amount far out of range) is named first for most broken rows (a random ranking of
    the 8 columns: 1/8); chunks stream; a resume with another K is refused."""
    _, model_dir = model
    df = table.copy()
    broken = np.arange(0, len(df), 5)
    df.loc[broken, "amount"] = df["amount"].max() * 20
    inp = write(df, tmp_path / "in.csv")
    out = tmp_path / "out.parquet"
    assert main(["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out),
                 "--id-column", "order_id", "--chunk-rows", "128", "--explain", "2", "--no-progress"]) == 0
    got = read(out)
    assert list(got.columns) == COLUMNS + ["explain_1_column", "explain_1_contribution", "explain_2_column",
                                           "explain_2_contribution"]
    assert (got["explain_1_column"].to_numpy()[broken] == "amount").mean() >= 0.8
    assert (got["explain_1_contribution"] >= got["explain_2_contribution"]).all()
    assert (got["explain_1_column"] != got["explain_2_column"]).all()

    calls = []

    def stop_after_two(path, scores):
        calls.append(path)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(path, scores)

    real = batch_files.write_part
    monkeypatch.setattr(batch_files, "write_part", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        score_file(model_dir, inp, tmp_path / "again.parquet", id_column="order_id", chunk_rows=128, explain=2)
    monkeypatch.setattr(batch_files, "write_part", real)
    with pytest.raises(ValueError, match="explain: 2 then, 3 now"):
        score_file(model_dir, inp, tmp_path / "again.parquet", id_column="order_id", chunk_rows=128, explain=3,
                   resume=True)
    stats = score_file(model_dir, inp, tmp_path / "again.parquet", id_column="order_id", chunk_rows=128, explain=2,
                       resume=True)
    assert stats["chunks_reused"] == 2
    pd.testing.assert_frame_equal(read(tmp_path / "again.parquet"), got)
    with pytest.raises(ValueError, match=r"explain \(--explain\) is 9, but the model has only 8 input columns"):
        score_file(model_dir, inp, tmp_path / "x.parquet", explain=9)


def test_progress_counts_bytes_of_a_csv_and_rows_of_a_parquet(tmp_path):
    """The bar's total is the CSV's size in bytes, advanced by the bytes each chunk read (so
    it shows a percentage and an ETA); a Parquet file's total is its row count."""
    from gananomaly.pipelines.batch_read import csv_chunks, parquet_chunks, progress_total

    df = mixed_table(6000, random_state=1)
    for name in ("t.csv", "t.csv.gz"):
        path = write(df, tmp_path / name) if name == "t.csv" else tmp_path / name
        if name != "t.csv":
            df.to_csv(path, index=False)
        total, unit = progress_total(path, "csv", None)
        assert (total, unit) == (path.stat().st_size, "B")
        advances = [c.advance for c in csv_chunks(path, list(df.columns), 1500, None, "error")]
        assert sum(advances) == total and len(advances) == 4 and all(a >= 0 for a in advances)
    path = write(df, tmp_path / "t.parquet")
    assert progress_total(path, "parquet", 6000) == (6000, "rows")
    assert [c.advance for c in parquet_chunks(path, ["amount"], 2500)] == [2500, 2500, 1000]


def test_tabular_score_names_no_column_that_the_config_drops(model, table, tmp_path, caplog):
    """`gananomaly tabular score --config`: the config's dropped, label and ID columns are not
    features; the "ignoring column(s)" warning names only columns the config does not know."""
    _, model_dir = model
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "b"\n[data]\nbuiltin = "mixed"\nid_columns = ["order_id"]\n'
                   'drop_columns = ["anomaly_kind"]\nlabel_column = "is_anomaly"\n')
    df = mixed_table(200, random_state=3).assign(note="x")
    inp = write(df, tmp_path / "in.parquet")
    with caplog.at_level("WARNING"):
        assert main(["tabular", "score", "--config", str(cfg), "--model", str(model_dir), "--input", str(inp),
                     "--output", str(tmp_path / "s.parquet"), "--no-progress"]) == 0
    ignoring = [r.getMessage() for r in caplog.records if "ignoring column" in r.getMessage()]
    assert len(ignoring) == 1 and "note" in ignoring[0], ignoring
    assert "anomaly_kind" not in ignoring[0] and "is_anomaly" not in ignoring[0]
    assert read(tmp_path / "s.parquet")["order_id"].tolist() == df["order_id"].tolist()
