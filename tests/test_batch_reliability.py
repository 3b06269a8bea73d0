"""Batch scoring under attack: two jobs on one output, stale parts, inputs edited in place,
full or read-only disks, numbers too large to score."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gananomaly.pipelines.batch_files as batch_files
import gananomaly.pipelines.frame_scoring as frame_scoring
import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.batch_score import OutputError, score_file, score_frame
from gananomaly.pipelines.cli import main

COLS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    """A tiny detector on three named columns, saved: (detector, model_dir)."""
    from gananomaly import GANAnomalyDetector

    rng = np.random.RandomState(0)
    model = GANAnomalyDetector(epochs=2, encoder_epochs=2, random_state=0, validation_fraction=0).fit(
        pd.DataFrame(rng.randn(200, 3), columns=COLS))
    path = tmp_path_factory.mktemp("rel") / "det"
    model.save(path)
    return model, path


def frame(n: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.RandomState(seed)
    return pd.DataFrame({"id": [f"r{seed}-{i}" for i in range(n)], **dict(zip(COLS, np.round(rng.randn(3, n), 6)))})


def write(data: pd.DataFrame, path: Path) -> Path:
    data.to_csv(path, index=False) if path.suffix == ".csv" else data.to_parquet(path, index=False)
    return path


def interrupted_run(monkeypatch, model_dir, inp, out, n_parts: int, **kwargs) -> Path:
    """Score ``inp`` in chunks of 50 rows, interrupted (as a kill would) once ``n_parts``
    chunks are committed; returns the work directory left behind."""
    real, calls = batch_files.write_part, []

    def commit(path, scores):
        calls.append(path)
        if len(calls) > n_parts:
            raise KeyboardInterrupt
        real(path, scores)

    with monkeypatch.context() as patch:
        patch.setattr(batch_files, "write_part", commit)
        with pytest.raises(KeyboardInterrupt):
            score_file(model_dir, inp, out, id_column="id", chunk_rows=50, **kwargs)
    return Path(f"{out}.parts")


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere below ``root``, and parts written but never committed."""
    tmp = [str(p) for p in root.rglob("*") if ".tmp" in p.name]
    uncommitted = [str(p) for p in root.rglob("part-*.parquet") if not p.with_suffix(".json").is_file()]
    return tmp + uncommitted


def cli(model_dir, inp, out, *extra) -> list[str]:
    return ["score", "--model", str(model_dir), "--input", str(inp), "--output", str(out), "--id-column", "id",
            "--no-progress", *extra]


# ------------------------------------------------------------------------------ 1. one job per output
def test_second_job_on_the_same_output_is_refused_at_once(det, tmp_path, monkeypatch):
    model, model_dir = det
    first, other = frame(seed=1), frame(seed=2)
    a, b = write(first, tmp_path / "a.csv"), write(other, tmp_path / "b.csv")
    out = tmp_path / "s.parquet"
    real, refused = batch_files.write_part, []

    def second_job(path, scores):  # while the first job runs, a second one starts on the same output
        if not refused:
            refused.append(time.monotonic())
            with pytest.raises(OutputError) as err:
                score_file(model_dir, b, out, id_column="id", chunk_rows=50)
            refused[0] = (str(err.value), time.monotonic() - refused[0])
        real(path, scores)

    monkeypatch.setattr(batch_files, "write_part", second_job)
    stats = score_file(model_dir, a, out, id_column="id", chunk_rows=50)
    message, seconds = refused[0]
    assert f"--output {str(out)!r} is being written by another scoring job (pid {os.getpid()})" in message
    assert f"{out}.lock" in message and seconds < 5
    got = pd.read_parquet(out)
    assert stats["chunks_reused"] == 0 and got["id"].tolist() == first["id"].tolist()
    np.testing.assert_array_equal(got["score"], model.score_samples(first[COLS]))
    assert not Path(f"{out}.lock").exists() and not leftovers(tmp_path)


def test_cli_refuses_an_output_locked_by_another_process(det, tmp_path, capsys):
    _, model_dir = det
    inp = write(frame(), tmp_path / "in.csv")
    out = tmp_path / "s.csv"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); time.sleep(60)"), f"{out}.lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(cli(model_dir, inp, out)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{out}.lock" in err and "another scoring job" in err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert main(cli(model_dir, inp, out)) == 0  # a lock whose holder died is free
    assert len(pd.read_csv(out)) == 300


def test_parts_are_reused_only_under_resume_and_only_when_they_match(det, tmp_path, monkeypatch):
    model, model_dir = det
    data = frame()
    inp = write(data, tmp_path / "in.parquet")
    out = tmp_path / "s.parquet"
    work = interrupted_run(monkeypatch, model_dir, inp, out, 3)
    # part 1 loses rows; part 2's metadata claims other input rows: both are scored again
    pd.read_parquet(work / "part-000001.parquet").iloc[:7].to_parquet(work / "part-000001.parquet", index=False)
    meta = json.loads((work / "part-000002.json").read_text())
    assert meta.get("rows", [101, 150]) == [101, 150]
    (work / "part-000002.json").write_text(json.dumps({**meta, "rows": [1, 50]}))
    stats = score_file(model_dir, inp, out, id_column="id", chunk_rows=50, resume=True)
    assert stats["chunks_reused"] == 1 and stats["rows_scored"] == 300
    got = pd.read_parquet(out)
    assert got["id"].tolist() == data["id"].tolist()
    np.testing.assert_array_equal(got["score"], model.score_samples(data[COLS]))
    # without --resume nothing of an earlier run is used, whatever lies in the work directory
    interrupted_run(monkeypatch, model_dir, inp, out, 2)
    assert score_file(model_dir, inp, out, id_column="id", chunk_rows=50)["chunks_reused"] == 0


# ------------------------------------------------------------------------------ 2. content fingerprint
def test_resume_refuses_an_input_edited_in_place_with_its_mtime_restored(det, tmp_path, monkeypatch):
    model, model_dir = det
    data = frame()
    inp = write(data, tmp_path / "in.csv")
    out = tmp_path / "s.csv"
    interrupted_run(monkeypatch, model_dir, inp, out, 2)
    before = inp.stat()
    text = inp.read_text()
    row = text.splitlines()[3]  # data row 3, in the first (committed) chunk
    i = len(row) - 1  # its last digit changes: same size, still a number
    edited = row[:i] + ("1" if row[i] != "1" else "2")
    assert len(edited) == len(row) and edited != row
    inp.write_text(text.replace(row, edited))
    os.utime(inp, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (inp.stat().st_size, inp.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(ValueError, match=r"cannot resume .*the input's content changed"):
        score_file(model_dir, inp, out, id_column="id", chunk_rows=50, resume=True)
    assert not out.exists()
    stats = score_file(model_dir, inp, out, id_column="id", chunk_rows=50)  # starting over is the way
    assert stats["chunks_reused"] == 0
    fresh = pd.read_csv(inp)
    np.testing.assert_allclose(pd.read_csv(out)["score"], model.score_samples(fresh[COLS]), rtol=1e-12)


def test_resume_refuses_a_model_that_differs_only_in_how_it_combines_its_scores(det, tmp_path, monkeypatch):
    """The fingerprint held the networks, the scaler, offset and weight only: a model saved
    with another knn_weight (the same networks, the same offset) resumed a job and mixed
    chunks of two models' scores. It now covers everything the save writes, and a pipeline's
    fitted preprocessing."""
    from gananomaly.pipelines.model_loading import model_fingerprint
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import gananomaly

    model, model_dir = det
    other = gananomaly.load(model_dir)
    other.set_params(knn_weight=1.0)  # "auto" is 3 for tables
    other.set_threshold(score=float(model.offset_))
    other.save(tmp_path / "other")
    assert not np.allclose(other.score_samples(frame()[COLS]), model.score_samples(frame()[COLS]))
    inp, out = write(frame(), tmp_path / "in.csv"), tmp_path / "s.csv"
    interrupted_run(monkeypatch, model_dir, inp, out, 2)
    with pytest.raises(ValueError, match=r"cannot resume .*the model changed"):
        score_file(tmp_path / "other", inp, out, id_column="id", chunk_rows=50, resume=True)
    manifest = Path(f"{out}.parts") / batch_files.MANIFEST_NAME  # a work directory of the previous version:
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 3}))  # not "the model changed"
    with pytest.raises(ValueError, match=r"written by another gananomaly \(work directory version 3, this one "
                                         r"writes 4\)"):
        score_file(model_dir, inp, out, id_column="id", chunk_rows=50, resume=True)
    assert model_fingerprint(gananomaly.load(model_dir)) == model_fingerprint(model)  # loaded = in memory
    X = frame()[COLS]
    pipe, shifted = (make_pipeline(StandardScaler().fit(X + d), gananomaly.load(model_dir)) for d in (0.0, 1.0))
    assert model_fingerprint(pipe) != model_fingerprint(shifted)  # the preprocessing's state counts
    from sklearn.preprocessing import FunctionTransformer

    plus, times = (make_pipeline(FunctionTransformer(fn), gananomaly.load(model_dir))
                   for fn in (np.negative, np.positive))
    assert model_fingerprint(plus) != model_fingerprint(times)
    scale = 2.0
    by_two, by_three = (make_pipeline(FunctionTransformer(lambda X, s=s: X * s * scale), gananomaly.load(model_dir))
                        for s in (1.0, 1.5))  # the same code: its defaults and closed-over values count
    assert model_fingerprint(by_two) != model_fingerprint(by_three)
    from gananomaly.lapgan import LaplacianPyramidDetector
    pyramid = LaplacianPyramidDetector(levels=2, epochs=1, random_state=0).fit(np.random.RandomState(0).rand(16, 8, 8))
    with pytest.raises(ValueError, match="a Laplacian-pyramid model; the scoring jobs take a GANAnomalyDetector"):
        score_file(pyramid, inp, out)


def test_every_bad_cell_is_named_at_once_and_a_failed_job_leaves_no_work_directory(det, tmp_path):
    """A bare detector (no imputer): a missing number and an infinity were named one run at a
    time (infinity first, the missing value only after it was fixed), and a job that failed
    before committing a chunk left ``<output>.parts`` with its manifest behind."""
    _, model_dir = det
    data = frame()
    data.loc[2, "a"] = np.nan
    data.loc[5, "c"] = np.inf
    inp = write(data, tmp_path / "in.csv")
    out = tmp_path / "s.csv"
    with pytest.raises(ValueError, match=r"column 'a': rows 3 \(e\.g\. \[nan\]\); "
                                         r"column 'c': rows 6 \(e\.g\. \[inf\]\)"):
        score_file(model_dir, inp, out, id_column="id", chunk_rows=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
    stats = score_file(model_dir, inp, out, id_column="id", chunk_rows=50, on_bad_rows="skip")
    assert stats["skipped_rows"] == [3, 6] and stats["rows_scored"] == 298
    from gananomaly.pipelines.frame_scoring import score_frame
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model, _ = det
    no_imputer = make_pipeline(StandardScaler().fit(frame()[COLS]), model)  # fills nothing: as a bare detector
    with pytest.raises(ValueError, match=r"column 'a': rows 3 \(e\.g\. \[nan\]\)"):
        score_frame(no_imputer, data.drop(columns="id"))


def test_resume_after_a_strict_failure_may_skip_bad_rows_but_not_the_reverse(det, tmp_path, monkeypatch):
    _, model_dir = det
    data = frame()
    data[COLS] = data[COLS].astype(object)
    data.loc[260, "a"] = "oops"
    inp = write(data, tmp_path / "in.csv")
    out = tmp_path / "s.csv"
    with pytest.raises(ValueError, match="column 'a': rows 261"):
        score_file(model_dir, inp, out, id_column="id", chunk_rows=50)
    stats = score_file(model_dir, inp, out, id_column="id", chunk_rows=50, on_bad_rows="skip", resume=True)
    assert stats["chunks_reused"] == 5 and stats["skipped_rows"] == [261]
    # chunks written while skipping, then interrupted: a strict run may not take them
    interrupted_run(monkeypatch, model_dir, inp, tmp_path / "t.csv", 5, on_bad_rows="skip")
    with pytest.raises(ValueError, match=r"cannot resume .*on_bad_rows: 'skip' then, 'error' now"):
        score_file(model_dir, inp, tmp_path / "t.csv", id_column="id", chunk_rows=50, resume=True)


# ------------------------------------------------------------------------------ 3. full or read-only disk
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_write_failure_midway_is_one_line_and_leaves_nothing_behind(det, tmp_path, monkeypatch, capsys, code):
    import pyarrow.parquet as pq

    _, model_dir = det
    inp = write(frame(), tmp_path / "in.csv")
    out = tmp_path / "s.parquet"
    out.write_bytes(b"previous scores")
    real, calls = pq.write_table, []

    def full(table, where, *args, **kwargs):  # the third part runs out of space halfway
        calls.append(where)
        if len(calls) == 3:
            Path(where).write_bytes(b"PAR1" + b"\0" * 4096)
            raise OSError(code, os.strerror(code))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full)
    assert main(cli(model_dir, inp, out, "--chunk-rows", "50")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and os.strerror(code) in err and "part-000002.parquet" in err
    assert "--resume" in err and "the output was not changed" in err
    assert out.read_bytes() == b"previous scores" and not leftovers(tmp_path)
    assert not Path(f"{out}.lock").exists()
    monkeypatch.undo()
    assert main(cli(model_dir, inp, out, "--chunk-rows", "50", "--resume")) == 0
    assert "resumed 2 of 6 chunks" in capsys.readouterr().out and len(pd.read_parquet(out)) == 300


def test_disk_full_while_assembling_keeps_the_previous_output(det, tmp_path, monkeypatch, capsys):
    _, model_dir = det
    inp = write(frame(), tmp_path / "in.parquet")
    out = tmp_path / "s.csv"
    out.write_text("previous scores")
    real = batch_files.concat_parts

    def full(parts, tmp, fmt):
        real(parts[:3], tmp, fmt)  # half the output is at the temporary name...
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_files, "concat_parts", full)
    assert main(cli(model_dir, inp, out, "--chunk-rows", "50")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gananomaly score: error: cannot write the output {str(out)!r}: No space left on device "
                   f"[ENOSPC]; the output was not changed (rerun with --resume to reuse the 6 chunk(s) scored in "
                   f"{str(out) + '.parts'!r})")
    assert out.read_text() == "previous scores" and not leftovers(tmp_path)  # ...and is gone


def test_the_temporary_output_of_a_job_killed_while_writing_is_removed_by_the_next_run(det, tmp_path):
    """kill -9 while the parts were being joined left '.<output>.<random>.tmp' beside the
    output for ever (a resumed or a fresh run did not remove it). The next run removes the
    temporary of a process that is gone; one of a running job stays."""
    import subprocess

    from gananomaly._atomic import _host_tag

    _, model_dir = det
    inp, out = write(frame(), tmp_path / "in.csv"), tmp_path / "s.csv"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    killed = tmp_path / f".s.csv.{_host_tag()}-{dead}-x1y2z3.tmp"
    running = tmp_path / f".s.csv.{_host_tag()}-{os.getpid()}-a1b2c3.tmp"
    for f in (killed, running):
        f.write_text("half an output")
        os.utime(f, (time.time() - 3600, time.time() - 3600))
    score_file(model_dir, inp, out, id_column="id", chunk_rows=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.csv", "s.csv", running.name])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_integer_ids_with_a_missing_one_stay_integers_in_every_chunk(det, tmp_path, suffix):
    """A Parquet integer ID with one null in a chunk became float64 there: large IDs were
    rounded onto each other in a CSV output (201 distinct IDs for 300 rows), small ones
    written as 1101.0, and a Parquet output failed at the end."""
    _, model_dir = det
    data = frame().assign(id=pd.array([2**62 + i if i != 150 else None for i in range(300)], dtype="Int64"))
    inp = write(data, tmp_path / "in.parquet")
    out = tmp_path / f"s{suffix}"
    score_file(model_dir, inp, out, id_column="id", chunk_rows=100)
    got = (pd.read_csv(out, dtype={"id": "Int64"}) if suffix == ".csv"
           else pd.read_parquet(out, dtype_backend="numpy_nullable"))  # pandas' own default reads floats
    pd.testing.assert_series_equal(got["id"].astype("Int64"), data["id"], check_names=False)
    assert got["id"].nunique() == 299


def test_read_only_output_directory_is_a_clean_error(det, tmp_path, capsys):
    _, model_dir = det
    inp = write(frame(), tmp_path / "in.csv")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "s.csv").write_text("previous scores")
    ro.chmod(0o555)
    try:
        probe = ro / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"permissions are not enforced (euid {os.geteuid()})")
        assert main(cli(model_dir, inp, ro / "s.csv")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write the lock file" in err and "Permission denied" in err
        assert sorted(p.name for p in ro.iterdir()) == ["s.csv"] and (ro / "s.csv").read_text() == "previous scores"
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------ 4. numbers too large to score
def huge(data: pd.DataFrame) -> pd.DataFrame:
    data = data.copy()
    data.loc[3, "a"] = 1e25
    data.loc[141, "b"] = 1e300
    data.loc[142, "c"] = -1e20
    return data


def test_values_too_large_to_score_are_named_or_skipped_never_written(det, tmp_path, capsys):
    model, model_dir = det
    data = huge(frame())
    inp = write(data, tmp_path / "in.csv")
    out = tmp_path / "s.parquet"
    with pytest.raises(ValueError, match=r"too large to score .*column 'a': rows 4 \(e\.g\. \[1e\+25\]\)"):
        score_file(model_dir, inp, out, id_column="id", chunk_rows=100)
    assert main(cli(model_dir, inp, out, "--chunk-rows", "1000")) == 2
    err = capsys.readouterr().err
    assert "column 'a': rows 4 " in err and "column 'b': rows 142 " in err and "column 'c': rows 143 " in err
    assert not out.exists()
    assert main(cli(model_dir, inp, out, "--chunk-rows", "100", "--on-bad-rows", "skip")) == 0
    assert "skipped 3 row(s): 4, 142, 143" in capsys.readouterr().out
    got = pd.read_parquet(out)
    assert len(got) == 297 and np.isfinite(got.drop(columns=["id", "label"]).to_numpy()).all()
    keep = ~data["id"].isin(data["id"][[3, 141, 142]])
    assert got["id"].tolist() == data["id"][keep].tolist()
    np.testing.assert_array_equal(got["score"], model.score_samples(data.loc[keep, COLS]))
    _, report = score_frame(model, data[COLS], on_bad_rows="skip")
    assert report.bad_values == {"a": 1, "b": 1, "c": 1} and report.skipped_rows == [4, 142, 143]


def test_pipeline_model_is_checked_after_its_preprocessing(tmp_path):
    from gananomaly.pipelines.datasets import mixed_table
    from gananomaly.pipelines.tabular import TabularConfig, fit_tabular

    cfg = TabularConfig(name="b", builtin="mixed", options={"n_samples": 100}, id_columns=["order_id"],
                        drop_columns=["anomaly_kind"], label_column="is_anomaly", mlflow=False,
                        detector={"epochs": 1, "encoder_epochs": 1, "hidden_dims": [8], "random_state": 0,
                                  "device": "cpu", "validation_fraction": 0})
    result = fit_tabular(cfg, output_dir=tmp_path)
    data = mixed_table(60, random_state=3).drop(columns=["is_anomaly", "anomaly_kind"])
    data.loc[5, "amount"] = 1e25
    data.loc[40, "amount"] = 1e300
    inp = write(data, tmp_path / "in.parquet")
    with pytest.raises(ValueError, match=r"column 'amount': rows 6, 41 \(e\.g\. \[1e\+25, 1e\+300\]\)"):
        score_file(result.model_path, inp, tmp_path / "s.csv", id_column="order_id")
    stats = score_file(result.model_path, inp, tmp_path / "s.csv", id_column="order_id", on_bad_rows="skip")
    assert stats["skipped_rows"] == [6, 41] and stats["bad_values"] == {"amount": 2}
    got = pd.read_csv(tmp_path / "s.csv")
    assert len(got) == 58 and np.isfinite(got.drop(columns=["order_id"]).to_numpy(dtype=float)).all()


def test_scores_that_come_out_infinite_are_never_written(det, monkeypatch):
    model, _ = det
    data = frame(20)
    real = frame_scoring._score_transformed

    def overflow(d, Xt, context=None):
        scores = real(d, Xt, context)
        scores.loc[4, "latent"] = np.inf
        return scores

    monkeypatch.setattr(frame_scoring, "_score_transformed", overflow)
    with pytest.raises(ValueError, match=r"the model's scores are not finite: rows 5; the most extreme value is in"):
        score_frame(model, data[COLS])
    scores, report = score_frame(model, data, id_column="id", on_bad_rows="skip")
    assert report.skipped_rows == [5] and report.n_skipped == 1 and report.rows_scored == 19
    assert "r1-4" not in set(scores["id"]) and np.isfinite(scores.drop(columns=["id"]).to_numpy(float)).all()


def test_an_image_job_interrupted_before_on_bad_rows_was_recorded_still_resumes(tmp_path):
    """Image manifests gained on_bad_rows; one written before it (those jobs skipped unreadable
    files) resumes under the same policy and is refused under another."""
    import json

    work = tmp_path / "out.csv.parts"
    work.mkdir()
    before = {"format": "x", "version": 1, "input": "in", "chunk_rows": 10, "model_id": "m"}
    (work / batch_files.MANIFEST_NAME).write_text(json.dumps(before))
    batch_files.prepare_workdir(work, {**before, "on_bad_rows": "skip"}, resume=True)
    with pytest.raises(ValueError, match=r"cannot resume .*on_bad_rows"):
        batch_files.prepare_workdir(work, {**before, "on_bad_rows": "error"}, resume=True)


def test_lines_ending_in_a_delimiter_are_read_as_the_header_says(det, tmp_path):
    """'1,2,3,' under the header 'a,b,c': pandas took the first column as the index and moved
    every value one column left (scores off by up to 1e7, no warning). Now the trailing empty
    field is ignored, in the batch job and in a fit's CSV; a value after the header's last
    column is refused, not dropped."""
    from gananomaly.data import read_numeric

    model, model_dir = det
    data = frame()
    plain = write(data, tmp_path / "plain.csv")
    trailing = tmp_path / "trailing.csv"
    lines = plain.read_text().splitlines()
    trailing.write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    score_file(model_dir, trailing, tmp_path / "t.csv", id_column="id", chunk_rows=50)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "t.csv")["score"], model.score_samples(data[COLS]),
                               rtol=1e-12)
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("a,b,c\n" + "".join(f"{r.a},{r.b},{r.c},\n" for r in data.itertuples()))
    np.testing.assert_array_equal(read_numeric(str(numeric)), data[COLS].to_numpy())
    # a fit's file names a bad row as the batch job does, counted from 1 (it said "row index 5")
    holed = tmp_path / "holed.csv"
    holed.write_text("a,b,c\n1,2,3\n4,,6\n")
    with pytest.raises(ValueError, match=r"holed\.csv.*column 'b': row 2 \(counted from 1\)"):
        read_numeric(str(holed))
    from gananomaly.pipelines.table_data import read_file

    pd.testing.assert_frame_equal(read_file(trailing, id_columns=["id"]), read_file(plain, id_columns=["id"]))
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([lines[0]] + [line + ("," if i != 70 else ",9") for i, line in enumerate(lines[1:])]))
    with pytest.raises(ValueError, match=r"row 71 has a value after the header.s last column \('9';"):
        score_file(model_dir, extra, tmp_path / "e.csv", id_column="id", chunk_rows=50)
    assert not (tmp_path / "e.csv").exists()
    stats = score_file(model_dir, extra, tmp_path / "e.csv", id_column="id", chunk_rows=50, on_bad_rows="skip")
    assert stats["skipped_rows"] == [71] and stats["rows_scored"] == 299  # skipped as any malformed line
    kept = pd.read_csv(tmp_path / "e.csv")
    np.testing.assert_allclose(kept["score"], model.score_samples(data[COLS].drop(index=70)), rtol=1e-12)
