"""The ``-l``/``--selector`` option of the commands that list objects (status, events, plan)."""

from __future__ import annotations

import argparse
import sys

from kvmrec.api import selectors


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l",
        "--selector",
        action="append",
        default=[],
        metavar="SELECTOR",
        help="only objects whose labels match: key=value, key!=value, key, !key; "
        "comma-separated or repeated, all must hold",
    )


def of(args: argparse.Namespace, command: str) -> selectors.Selector | None:
    """The selector given, or None after saying what is wrong with it."""
    try:
        return selectors.parse(args.selector)
    except ValueError as exc:
        print(f"kvmrec {command}: {exc}", file=sys.stderr)
        return None
