"""Every expected failure of the command line is one line on stderr and rc 2, never a traceback."""

import json

import numpy as np
import pytest
from gananomaly.pipelines.cli import main


@pytest.fixture
def model_dir(tmp_path):
    from gananomaly import GANAnomalyDetector

    X = np.random.RandomState(0).randn(60, 3)
    np.save(tmp_path / "x.npy", X)
    path = tmp_path / "model"
    # validation_fraction 0: no fidelity measurement, the slow part of so small a fit
    GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0, validation_fraction=0).fit(X).save(path)
    return path


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
    for args in (["--version"], ["--help"], ["score", "--help"], ["tabular", "fit", "--help"],
                 ["image", "fit", "--help"], ["runs", "compare", "--help"]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert proc.returncode == 0, (args, proc.returncode, proc.stderr)
        assert "gananomaly" in proc.stdout
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(_COMMANDS) == set(sub.choices)
