"""``kvmrec plan``: a dry run of the next reconcile (exit 2 when anything would change).

It reads the service's configuration file (flags over file, kvmrec/config.py), so a plan
made by hand looks at the manifests, libvirt and state the service uses. ``-f`` plans
candidate files before they go into the manifest directory (sources/candidates.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kvmrec import config, logs
from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.errors import Unavailable
from kvmrec.cli import safety, selecting, where
from kvmrec.cli.progress import Progress
from kvmrec.planning import PlanReport, plan
from kvmrec.sources import candidates

_CANDIDATE_HELP = (
    "plan candidate manifests, a file or a directory of them, before they go into the "
    "manifest directory: each candidate file stands in for the file of its name there (a "
    "directory's files by their paths in it) and every other file stays, so nothing shows "
    "as deleted for not being in the candidate. Only the objects the candidates define, or "
    "drop from a file they replace, are shown; they are validated as the service would "
    "(file ownership aside), errors name the candidate files, and nothing is applied"
)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "plan", help="show what the next reconcile would change (exit 2 if anything)"
    )
    where.add_manifests(parser)
    parser.add_argument("--connect", default=None, help="libvirt URI")
    where.add_state(parser, store=True)
    parser.add_argument("object", nargs="?", metavar="KIND/NAME", help="only this object")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("-f", "--filename", type=Path, metavar="FILE_OR_DIR", help=_CANDIDATE_HELP)
    selecting.add_option(parser)
    safety.add_insecure_manifests(parser)
    safety.add_disk_options(parser)
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    only = None
    if args.object:
        try:
            only = ObjectKey.parse(args.object)
        except ValueError as exc:
            print(f"kvmrec plan: {exc}", file=sys.stderr)
            return 1
    selector = selecting.of(args, "plan")
    if selector is None:
        return 1
    try:
        resolved = where.cli_config(args)
    except config.ConfigError as exc:
        print(f"kvmrec plan: {exc}", file=sys.stderr)
        return 1
    logs.setup(resolved.log_level, resolved.log_format)
    settings = resolved.settings
    if settings.store is None:
        where.warn_unserved("kvmrec plan", settings.state)
    candidate = None
    if args.filename is not None:
        try:
            candidate = candidates.read(args.filename, settings.manifests)
        except candidates.CandidateError as exc:
            print(f"kvmrec plan: -f {exc}", file=sys.stderr)
            return 1
    progress = Progress("planning")
    try:
        report = plan(settings, only, progress.update, candidate, selector)
    except Unavailable as exc:
        print(f"kvmrec plan: {exc}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    if args.output == "json":
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(table(report))
    return 2 if report.changes or report.errors else 0


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def table(report: PlanReport) -> str:
    rows = [["KIND", "NAME", "ACTION", "FIELD", "ACTUAL -> DESIRED"]]
    for change in report.changes:
        head = [change["kind"], change["name"], change["action"]]
        if not change["fields"]:
            rows.append([*head, "-", change["detail"]])
        for f in change["fields"]:
            rows.append([*head, f["field"], f"{_show(f['actual'])} -> {_show(f['desired'])}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    if not report.changes:
        lines.append("(no changes)")
    lines += [f"error: {e['source']}: {e['message']}" for e in report.errors]
    return "\n".join(line.rstrip() for line in lines)
