"""``kvmrec validate FILE_OR_DIR...``: check manifests offline, as the service would.

A directory is read as the service reads its manifest directory, StrictModes included
(sources/trust.py): a manifest that others could have written is reported with the reason
and the fix, unless ``--insecure-manifests``. A single file is only parsed: it is a draft
being checked, wherever it is, not something kvmrec loads from there. ``kvmrec apply``
checks its files with the same :func:`check_paths`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from kvmrec.api import manifests
from kvmrec.api.errors import ManifestError
from kvmrec.api.objects import Manifest
from kvmrec.cli import safety
from kvmrec.sources import trust
from kvmrec.sources.scanning import DEFAULT_MAX_FILE_BYTES, scan


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "validate", help="check manifest files or directories (exit 2 if any is invalid)"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    safety.add_insecure_manifests(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    tally = check_paths(args.paths, insecure=args.insecure_manifests, out=sys.stdout)
    print(tally.summary())
    return 0 if not tally.problems else 2


def check_paths(paths: Iterable[Path], *, insecure: bool, out: TextIO) -> Tally:
    """Every manifest of ``paths`` checked as the service would take it; each problem is
    printed on ``out`` as it is found, and the valid manifests are kept in the tally."""
    tally = Tally(out)
    for path in paths:
        if path.is_dir():
            snapshot = scan(path)
            if not insecure:
                snapshot = trust.enforce(snapshot, path)
            files = [(f"{path}/{rel}", c.data) for rel, c in sorted(snapshot.files.items())]
            for rel, reason in sorted(snapshot.errors.items()):
                tally.invalid_file([f"{path}/{rel}: {reason}"])
            if not snapshot.complete:
                tally.problem(f"{path}: {snapshot.error}")
        elif path.exists():
            with path.open("rb") as f:
                data = f.read(DEFAULT_MAX_FILE_BYTES + 1)  # the service reads no more
            if len(data) > DEFAULT_MAX_FILE_BYTES:
                tally.invalid_file(
                    [f"{path}: too large: over the 1 MiB limit for one manifest file"]
                )
                continue
            files = [(str(path), data)]
        else:
            tally.problem(f"{path}: no such file or directory")
            continue
        for name, data in files:
            tally.check(name, data)
    return tally


class Tally:
    """Files, objects and problems, counted as the service would take the files: a file is
    applied whole or not at all, so the objects of an invalid file are not counted as valid,
    and a file that defines an object another file already has is invalid as a whole."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.manifests: list[Manifest] = []  # of the valid files
        self.files = 0
        self.invalid = 0
        self.objects = 0
        self.problems = 0
        self.owners: dict[tuple[str, str], str] = {}
        self.seen: set[Path] = set()

    def problem(self, text: str) -> None:
        print(text, file=self.out)
        self.problems += 1

    def invalid_file(self, problems: list[str]) -> None:
        self.files += 1
        self.invalid += 1
        for text in problems:
            self.problem(text)

    def check(self, name: str, data: bytes) -> None:
        real = Path(name).resolve()
        if real in self.seen:
            return  # named twice (a file and its directory): one file, checked once
        self.seen.add(real)
        try:
            parsed = manifests.parse_file(name, data)
        except ManifestError as exc:
            self.invalid_file([str(p) for p in exc.problems])
            return
        taken = [
            f"{name}: document {m.document}: {m.kind}/{m.name} is already defined in "
            f"{self.owners[(m.kind, m.name)]}"
            for m in parsed
            if (m.kind, m.name) in self.owners
        ]
        if taken:
            self.invalid_file(taken)
            return
        self.files += 1
        self.objects += len(parsed)
        self.manifests.extend(parsed)
        self.owners.update({(m.kind, m.name): name for m in parsed})

    def summary(self) -> str:
        if not self.problems:
            return f"{self.files} file(s), {self.objects} object(s), valid"
        files = (
            f"{self.files} file(s) ({self.invalid} invalid)"
            if self.invalid
            else (f"{self.files} file(s)")
        )
        return f"{files}, {self.objects} valid object(s), {self.problems} problem(s)"
