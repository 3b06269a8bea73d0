"""Option types shared by the command modules (argparse only: every ``--help`` stays fast).
Each is an argparse ``type`` whose error says what is expected; argparse names the option."""

from __future__ import annotations

import argparse

from gananomaly._args import seed_arg

__all__ = ["auto_or", "epochs_option", "contamination_option", "seed_arg"]


def auto_or(convert, valid, what: str):
    """An argparse ``type``: 'auto' or a number that ``convert`` reads and ``valid`` accepts."""

    def parse(text: str):
        if text == "auto":
            return text
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"must be 'auto' or {what}, got {text!r}")
        return value

    return parse


epochs_option = auto_or(int, lambda n: n >= 1, "a whole number of epochs >= 1")
contamination_option = auto_or(float, lambda c: 0 < c <= 0.5, "a number in (0, 0.5] (a share: 0.01 for 1%)")
