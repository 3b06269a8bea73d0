"""Imports point one way: the library never imports the pipelines or the command line."""

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import gananomaly


def test_library_modules_import_no_pipeline_module():
    names = [f"gananomaly.{m.name}" for m in pkgutil.iter_modules(gananomaly.__path__)]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('gananomaly.pipelines')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "gananomaly.distributed" in names and "gananomaly.tracking" in names
    assert out.stdout.strip() == "[]", out.stdout


def test_library_source_names_no_pipeline_module_to_import():
    """Also lazy imports (inside functions, or by name through importlib)."""
    pattern = re.compile(r"^\s*(from|import)\s+(gananomaly\.)?pipelines\b|import_module\("
                         r"|[\"'](gananomaly\.)?pipelines\.\w+[\"']")
    offenders = [f"{path.name}:{i}" for path in Path(gananomaly.__file__).parent.glob("*.py")
                 for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == [], offenders


def test_every_library_module_is_reachable_from_a_bare_import():
    """`import gananomaly` is lazy; its attribute table lists every public module."""
    files = {p.stem for p in Path(gananomaly.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert set(gananomaly._SUBMODULES) == files


def test_jobs_install_under_the_package_name_only(tmp_path):
    """The repository's pipelines/ folder installs as gananomaly.pipelines: no generic top-level name."""
    code = ("import importlib.util, gananomaly.pipelines.cli as c\n"
            "print(importlib.util.find_spec('pipelines') is None, c.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["True", "gananomaly.pipelines.cli"]
