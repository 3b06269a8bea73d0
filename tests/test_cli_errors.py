"""Every expected failure of the command line is one line on stderr and rc 2, never a traceback."""

import json
from pathlib import Path

import numpy as np
import pytest
from gananomaly.pipelines.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from gananomaly import GANAnomalyDetector

    X = np.random.RandomState(0).randn(60, 3)
    path = tmp_path_factory.mktemp("saved") / "model"
    # validation_fraction 0: no fidelity measurement, the slow part of so small a fit
    GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0, validation_fraction=0).fit(X).save(path)
    return X, path


@pytest.fixture
def model_dir(saved, tmp_path):
    import shutil

    X, path = saved
    np.save(tmp_path / "x.npy", X)
    return Path(shutil.copytree(path, tmp_path / "model"))  # one fit and save; each test damages its own copy


def _run(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, "".join(line + "\n" for line in err.splitlines() if line.startswith("gananomaly"))


def test_damaged_model_file_is_one_line(model_dir, tmp_path, capsys):
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 64)  # not a safetensors file
    rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "s.csv")], capsys)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1 and "error:" in err


def test_deeply_nested_config_is_one_line(model_dir, tmp_path, capsys):
    (model_dir / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "s.csv")], capsys)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1


def test_output_that_cannot_be_written_is_one_line(model_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc, err = _run(["fit", "--input", str(tmp_path / "x.npy"), "--output", str(blocker / "model"),
                    "--epochs", "1"], capsys)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1 and "not an existing directory" in err
    json.dumps(err)  # printable


def test_bad_table_input_or_output_is_one_line_before_any_work(model_dir, tmp_path, capsys):
    (tmp_path / "dup.csv").write_text("a,b,a\n1,2,3\n")
    out = tmp_path / "s.csv"
    rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / "dup.csv"), "--output", str(out)],
                   capsys)
    assert rc == 2 and err.count("\n") == 1 and "duplicate column names: ['a']" in err
    (tmp_path / "ok.csv").write_text("a,b,c\n1,2,3\n")
    rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / "ok.csv"),
                    "--output", str(tmp_path / "s.csv.zip")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "can be compressed as .csv.gz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.csv", "model", "ok.csv", "x.npy"]


def test_version_and_help_answer_without_importing_torch():
    """`gananomaly --version`, `--help` and every command's `--help` answer at once (they
    imported torch and every pipeline: ~3 s); the quick help lists exactly the parser's commands."""
    import subprocess
    import sys

    from gananomaly.pipelines.cli import _COMMANDS, build_parser

    # exit code 9 if torch was imported, also when argparse ends the process after --help
    code = ("import atexit, os, sys\n"
            "atexit.register(lambda: 'torch' in sys.modules and os._exit(9))\n"
            "from gananomaly.pipelines.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    runs = [(args, subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))  # at once: each waits on its imports
            for args in (["--version"], ["--help"], ["score", "--help"], ["tabular", "fit", "--help"],
                         ["image", "fit", "--help"], ["runs", "compare", "--help"])]
    for args, proc in runs:
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, (args, proc.returncode, stderr)
        assert "gananomaly" in stdout
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(_COMMANDS) == set(sub.choices)


def test_fit_refuses_an_output_it_cannot_replace_before_training(tmp_path, capsys, monkeypatch):
    """The save's rule is checked before the fit (it ran the whole fit, then refused the save)."""
    from gananomaly import GANAnomalyDetector

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted before the output was checked")

    monkeypatch.setattr(GANAnomalyDetector, "fit", no_fit)
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep")
    for output, why in (("notes", "refusing to replace it"), ("x.npy", "a file of that name exists")):
        rc, err = _run(["fit", "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / output),
                        "--epochs", "1"], capsys)
        assert rc == 2 and err.count("\n") == 1 and why in err and "--output" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "x.npy"]  # no temporary directory left
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep"


def test_a_2d_array_is_scored_as_a_table_by_a_table_model(model_dir, tmp_path, capsys):
    """`gananomaly fit` takes a 2-D .npy table; `score` takes it too, as a CSV of the same numbers."""
    import pandas as pd

    X = np.load(tmp_path / "x.npy")[:7]
    np.save(tmp_path / "t.npy", X)
    np.savetxt(tmp_path / "t.csv", X, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    for name in ("t.npy", "t.csv"):
        rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / name),
                        "--output", str(tmp_path / f"{name}.scores.csv"), "--no-progress"], capsys)
        assert rc == 0, err
    from_array, from_csv = (pd.read_csv(tmp_path / f"{n}.scores.csv") for n in ("t.npy", "t.csv"))
    pd.testing.assert_frame_equal(from_array, from_csv)
    assert len(from_array) == 7 and "label" in from_array.columns
    np.save(tmp_path / "img.npy", np.zeros((2, 3, 3)))
    rc, err = _run(["score", "--model", str(model_dir), "--input", str(tmp_path / "img.npy"),
                    "--output", str(tmp_path / "img.csv")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "3-D array (images)" in err


def test_fit_options_are_described_and_their_errors_name_them(tmp_path, capsys):
    from gananomaly.pipelines.cli import build_parser

    cases = [(["fit"], "--epochs", "2.5"), (["fit"], "--contamination", "1%"), (["fit"], "--contamination", "0.7"),
             (["image", "fit"], "--epochs", "2.5")]
    for command, option, value in cases:
        with pytest.raises(SystemExit) as exc:
            main([*command, "--input", "x.npy", "--output", "m", option, value])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"argument {option}: must be 'auto'" in err and value in err
    for value in ("0", "-3", "inf", "soon"):
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--input", "x.npy", "--output", "m", "--max-time", value])
        assert exc.value.code == 2 and "argument --max-time: must be a positive number of seconds" in \
            capsys.readouterr().err
    parser = build_parser()
    fit = next(a for a in parser._actions if a.dest == "command").choices["fit"]
    assert [a.dest for a in fit._actions if not a.help] == []
    assert fit.parse_args(["--input", "x", "--output", "m", "--max-time", "2.5"]).max_time == 2.5


def test_counts_are_refused_at_zero_and_resume_needs_its_checkpoint_directory(model_dir, tmp_path, capsys):
    """--explain 0 was taken silently (the served model refuses it), --chunk-rows 0 and
    --resume without --checkpoint-dir were named by the library's parameter, not the option."""
    score = ["score", "--model", str(model_dir), "--input", str(tmp_path / "x.npy"),
             "--output", str(tmp_path / "s.csv")]
    for option in ("--explain", "--chunk-rows"):
        with pytest.raises(SystemExit) as exc:
            main([*score, option, "0"])
        assert exc.value.code == 2 and f"argument {option}: must be a positive int, got 0" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    rc, err = _run(["fit", "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "m"), "--resume"], capsys)
    assert rc == 2 and "--resume needs --checkpoint-dir" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def _commands(parser, path=()):
    """(path, parser) of every command that has no subcommands."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, path + (name,))
                else:
                    yield path + (name,), sub


def test_verbose_and_version_are_taken_by_every_command(tmp_path, capsys):
    """The README lists -v/--verbose and --version under every command."""
    from gananomaly.pipelines.cli import build_parser

    commands = dict(_commands(build_parser()))
    assert {("fit",), ("score",), ("tabular", "score"), ("image", "fit"), ("runs", "compare")} <= set(commands)
    missing = [path for path, sub in commands.items()
               if not {"-v", "--verbose", "--version"} <= set(sub._option_string_actions)]
    assert missing == []
    rc = main(["fit", "-v", "--input", str(tmp_path / "none.npy"), "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and "does not exist" in err  # -v: the traceback too


@pytest.mark.parametrize("uri", ["foo://x", "file:///{tmp}/mlruns"])
def test_a_tracking_uri_mlflow_refuses_is_one_line(tmp_path, capsys, monkeypatch, uri):
    """MLflow's own refusals (an unknown scheme; the file store, which MLflow 3 refuses unless
    MLFLOW_ALLOW_FILE_STORE is set) ended in a traceback."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    rc = main(["runs", "compare", "--experiment", "e", "--tracking-uri", uri.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("gananomaly runs: error: ") and "Traceback" not in err
    assert ("unsupported URI 'foo://x'" in err) if uri == "foo://x" else ("MLFLOW_ALLOW_FILE_STORE" in err)


def test_a_model_without_column_names_says_it_takes_a_files_columns_in_order(model_dir, tmp_path, caplog):
    """Fitted on an array: a CSV's columns are taken by position, whatever their names; the
    job says so, naming the order it used (two files with the same rows in another column
    order scored differently, silently), and its explanations use the file's names."""
    import pandas as pd

    X = np.load(tmp_path / "x.npy")
    pd.DataFrame(X[:, ::-1], columns=["c", "b", "a"]).to_csv(tmp_path / "in.csv", index=False)
    with caplog.at_level("WARNING"):
        rc = main(["score", "--model", str(model_dir), "--input", str(tmp_path / "in.csv"), "--output",
                   str(tmp_path / "out.csv"), "--no-progress", "--explain", "2"])
    assert rc == 0
    out = pd.read_csv(tmp_path / "out.csv")  # explanations name the file's columns, not x0, x1, x2
    assert set(out["explain_1_column"]) | set(out["explain_2_column"]) <= {"a", "b", "c"}
    assert "fitted on an array without column names, so the input's columns are taken in their order: " \
           "['c', 'b', 'a']" in caplog.text


def test_empty_files_and_a_folder_of_tables_are_named_for_what_they_are(model_dir, tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b,c\n")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "part.csv").write_text("a,b,c\n1,2,3\n")
    np.savez(tmp_path / "none.npz")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    cases = [(["fit", "--input", str(tmp_path / "empty.csv")], "is empty (no header, no rows)"),
             (["fit", "--input", str(tmp_path / "none.npz")], "holds no arrays"),  # was an IndexError traceback
             (["fit", "--input", str(tmp_path / "objects.npy")], "objects.npy' holds an array of Python objects"),
             (["fit", "--input", str(tmp_path / "header.csv")], "has no data rows (columns: ['a', 'b', 'c'])"),
             (["score", "--model", str(model_dir), "--input", str(tmp_path / "tables")],
              "is a folder (a folder is scored as images), but the model was fitted on a table")]
    for argv, fragment in cases:
        rc = main([*argv, "--output", str(tmp_path / "x.csv"), "--no-progress"] if argv[0] == "score"
                  else [*argv, "--output", str(tmp_path / "m"), "--epochs", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and fragment in err and err.count("\n") == 1, err


@pytest.mark.parametrize("seed", ["-1", "99999999999", "x"])
def test_a_seed_numpy_cannot_take_is_named_as_the_option(seed, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--no-mlflow", "--seed", seed])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --seed: must be an int" in err  # was train_test_split's error


def test_an_image_array_of_the_wrong_shape_is_named_by_its_file(tmp_path, capsys):
    """`score --input bad.npy` on an image model said 'X has images of 4x4 pixels ...': which
    file, in a job scoring many, it did not say. No output or parts are left behind."""
    from gananomaly import GANAnomalyDetector

    rng = np.random.RandomState(0)
    GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0, validation_fraction=0).fit(
        rng.rand(32, 8, 8)).save(tmp_path / "img_model")
    for name, shape, fragment in (("small.npy", (3, 4, 4), "images of 4x4 pixels"),
                                  ("rgb.npy", (3, 3, 8, 8), "3 channel(s)")):
        np.save(tmp_path / name, rng.rand(*shape))
        rc, err = _run(["score", "--model", str(tmp_path / "img_model"), "--input", str(tmp_path / name),
                        "--output", str(tmp_path / f"{name}.csv"), "--no-progress"], capsys)
        assert rc == 2 and err.count("\n") == 1, err
        assert f"{name}: " in err and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img_model", "rgb.npy", "small.npy"]
