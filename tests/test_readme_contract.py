"""The README documents every public option: each estimator parameter and each option of
every command (a new one without documentation fails here)."""

import argparse
from pathlib import Path

from gananomaly.pipelines.cli import build_parser

from gananomaly import GANAnomalyDetector

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        else:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    yield " ".join(path), option


def test_every_estimator_parameter_is_documented():
    missing = [p for p in GANAnomalyDetector().get_params() if f"`{p}`" not in README]
    assert missing == []


def test_every_command_and_option_is_documented():
    options = sorted(set(_options(build_parser())))
    commands = {cmd for cmd, _ in options if cmd}
    assert {"score", "fit", "tabular score", "image fit", "image score"} <= commands
    missing_commands = sorted(c for c in commands if f"`gananomaly {c}`" not in README)
    missing = sorted(f"{cmd} {opt}" for cmd, opt in options if f"`{opt}" not in README)
    assert missing_commands == [] and missing == []


def test_the_two_first_commands_are_the_install_and_test_commands():
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
