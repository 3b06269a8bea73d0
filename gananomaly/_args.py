"""Command-line argument types shared by the library's entry points and the CLI."""

from __future__ import annotations

import argparse

__all__ = ["seed_arg", "positive_int_arg", "epochs_arg"]


def positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def epochs_arg(text: str):
    """``"auto"`` or a positive int."""
    return text if text == "auto" else positive_int_arg(text)


def seed_arg(text: str) -> int:
    """An int in [0, 2**32 - 1], what numpy and scikit-learn take as a seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an int in [0, 2**32 - 1], got {value}")
    return value
