"""``kvmrec validate FILE_OR_DIR...``: check manifests offline, as the service would.

A directory is read as the service reads its manifest directory, StrictModes included
(sources/trust.py): a manifest that others could have written is reported with the reason
and the fix, unless ``--insecure-manifests``. A single file is only parsed: it is a draft
being checked, wherever it is, not something kvmrec loads from there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kvmrec.api import manifests
from kvmrec.api.errors import ManifestError
from kvmrec.cli import safety
from kvmrec.sources import trust
from kvmrec.sources.directory import DEFAULT_MAX_FILE_BYTES, scan


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "validate", help="check manifest files or directories (exit 2 if any is invalid)"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    safety.add_insecure_manifests(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    problems = 0
    objects = 0
    seen: dict[tuple[str, str], str] = {}
    for path in args.paths:
        if path.is_dir():
            snapshot = scan(path)
            if not args.insecure_manifests:
                snapshot = trust.enforce(snapshot, path)
            files = [(f"{path}/{rel}", c.data) for rel, c in sorted(snapshot.files.items())]
            for rel, reason in sorted(snapshot.errors.items()):
                print(f"{path}/{rel}: {reason}")
                problems += 1
            if not snapshot.complete:
                print(f"{path}: {snapshot.error}")
                problems += 1
        elif path.exists():
            with path.open("rb") as f:
                data = f.read(DEFAULT_MAX_FILE_BYTES + 1)  # the service reads no more
            if len(data) > DEFAULT_MAX_FILE_BYTES:
                print(f"{path}: too large: over the 1 MiB limit for one manifest file")
                problems += 1
                continue
            files = [(str(path), data)]
        else:
            print(f"{path}: no such file or directory")
            problems += 1
            continue
        for name, data in files:
            try:
                for manifest in manifests.parse_file(name, data):
                    key = (manifest.kind, manifest.name)
                    if key in seen:
                        print(
                            f"{name}: document {manifest.document}: "
                            f"{manifest.kind}/{manifest.name} is already defined in {seen[key]}"
                        )
                        problems += 1
                    else:
                        seen[key] = name
                        objects += 1
            except ManifestError as exc:
                for problem in exc.problems:
                    print(problem)
                    problems += 1
    verdict = "valid" if not problems else f"{problems} problem(s)"
    print(f"{objects} object(s), {verdict}")
    return 0 if not problems else 2
