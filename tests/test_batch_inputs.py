"""Batch scoring of awkward but valid tables, and tables refused before any work: codes with
leading zeros, IDs that look like missing values, an ID stored as a Parquet index, a first
chunk of skipped rows, compressed output, repeated column names, ID columns named like a
score column, text that is not UTF-8."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gananomaly.pipelines.batch_score import score_file
from gananomaly.pipelines.table_data import read_file
from gananomaly.pipelines.tabular import TabularConfig, fit_tabular, model_schema

TINY = {"epochs": 1, "encoder_epochs": 1, "hidden_dims": (8,), "latent_dim": 2, "random_state": 0, "device": "cpu",
        "validation_fraction": 0}


def table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"order_id": [f"o{i}" for i in range(n)], "amount": rng.normal(50, 10, n),
                         "store": rng.choice(["001", "002", "003"], n)})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny pipeline fitted on a CSV whose categorical column holds codes with leading zeros."""
    root = tmp_path_factory.mktemp("inputs")
    table(60).to_csv(root / "train.csv", index=False)
    cfg = TabularConfig(name="codes", path=str(root / "train.csv"), id_columns=["order_id"],
                        categorical_columns=["store"], detector=dict(TINY), mlflow=False)
    return fit_tabular(cfg, output_dir=root / "run").model_path


def test_codes_keep_their_leading_zeros_whatever_the_chunking(model_dir, tmp_path):
    from gananomaly import load

    assert model_schema(load(model_dir)).categories["store"] == {"001", "002", "003"}
    inp = tmp_path / "in.csv"
    pd.DataFrame({"amount": [50.0, 51.0, 49.0, 50.0], "store": ["001", "002", "003", "X9"]}).to_csv(inp, index=False)
    outs = []
    for k in (1, 4):  # alone in its chunk, "001" would be read as the number 1
        stats = score_file(model_dir, inp, tmp_path / f"s{k}.csv", chunk_rows=k)
        assert stats["unseen_categories"] == {"store": 1}
        outs.append(pd.read_csv(tmp_path / f"s{k}.csv"))
    pd.testing.assert_frame_equal(outs[0], outs[1])
    assert outs[0]["label"].iloc[-1] == -1
    # the in-memory scoring of a file reads it the same way as the batch job
    from gananomaly.pipelines.tabular import score_tabular

    ids = tmp_path / "ids.csv"
    pd.DataFrame({"order_id": ["NA", "o2"], "amount": [50.0, 51.0], "store": ["001", "002"]}).to_csv(ids, index=False)
    frame = score_tabular(model_dir, ids, id_column="order_id")
    assert list(frame["order_id"]) == ["NA", "o2"] and (frame["label"] == 1).all()


def test_ids_that_read_like_missing_values_are_kept_and_gzip_output(model_dir, tmp_path):
    data = table(5, seed=1).assign(order_id=["NA", "null", "None", "N/A", "A1"])
    data.to_csv(tmp_path / "in.csv.gz", index=False)
    score_file(model_dir, tmp_path / "in.csv.gz", tmp_path / "s.csv.gz", id_column="order_id")
    assert (tmp_path / "s.csv.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, as the suffix says
    with gzip.open(tmp_path / "s.csv.gz", "rt") as fh:
        assert fh.readline().startswith("order_id,")
        assert [line.split(",")[0] for line in fh] == ["NA", "null", "None", "N/A", "A1"]


def test_parquet_id_stored_as_the_index_and_a_first_chunk_of_skipped_rows(model_dir, tmp_path):
    data = table(6, seed=2)
    data.set_index("order_id").to_parquet(tmp_path / "idx.parquet")
    score_file(model_dir, tmp_path / "idx.parquet", tmp_path / "a.csv", id_column="order_id")
    assert pd.read_csv(tmp_path / "a.csv")["order_id"].tolist() == data["order_id"].tolist()
    assert read_file(tmp_path / "idx.parquet")["order_id"].tolist() == data["order_id"].tolist()
    bad = data.astype({"amount": object})
    bad.loc[:1, "amount"] = "abc"  # chunk 1 (rows 1-2) is all skipped: an empty part
    bad.to_csv(tmp_path / "bad.csv", index=False)
    stats = score_file(model_dir, tmp_path / "bad.csv", tmp_path / "b.parquet", id_column="order_id",
                       on_bad_rows="skip", chunk_rows=2)
    assert stats["skipped_rows"] == [1, 2]
    assert pd.read_parquet(tmp_path / "b.parquet")["order_id"].tolist() == ["o2", "o3", "o4", "o5"]


def _dup_csv(path: Path) -> None:
    path.write_text("order_id,amount,store,amount\no1,50,001,1e9\n")


def _dup_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([["o1"], [50.0], ["001"], [1e9]], names=["order_id", "amount", "store", "amount"]),
                   path)


def _latin1(path: Path) -> None:
    path.write_bytes("order_id,amount,store\no1,50,001\no2,50,002\no3,50,caf\xe9\n".encode("latin-1"))


def _id_named_score(path: Path) -> None:
    table(3).rename(columns={"order_id": "score"}).to_csv(path, index=False)


@pytest.mark.parametrize("make, name, kwargs, message", [
    (_dup_csv, "in.csv", {}, r"in.csv has duplicate column names: \['amount'\]"),
    (_dup_parquet, "in.parquet", {}, r"in.parquet has duplicate column names: \['amount'\]"),
    (_latin1, "in.csv", {}, r"in.csv: row 3 \(line 4\) is not valid UTF-8: byte 0xe9 .* must be UTF-8"),
    (_id_named_score, "in.csv", {"id_column": "score"}, r"ID column 'score' has the name of a column of the scores"),
])
def test_bad_input_is_refused_naming_it_and_leaves_nothing(model_dir, tmp_path, make, name, kwargs, message):
    make(tmp_path / name)
    out = tmp_path / "s.csv"
    with pytest.raises(ValueError, match=message):
        score_file(model_dir, tmp_path / name, out, chunk_rows=1, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no output, no parts, no lock


def test_id_named_like_an_explanation_column_is_refused(model_dir, tmp_path):
    table(3).rename(columns={"order_id": "explain_1_column"}).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(ValueError, match=r"ID column 'explain_1_column' has the name of a column of the scores"):
        score_file(model_dir, tmp_path / "in.csv", tmp_path / "s.csv", id_column="explain_1_column", explain=1)
    score_file(model_dir, tmp_path / "in.csv", tmp_path / "s.csv", id_column="explain_1_column")  # no clash
    assert pd.read_csv(tmp_path / "s.csv").columns[0] == "explain_1_column"
