"""``kvmrec doctor``: is this host ready to run guests, and what to fix if not.

The checks are kvmrec/host_checks.py's, on the libvirt, Open vSwitch, disk roots and store
the service uses (found as every command finds them: flags, environment, configuration
file). A table (CHECK, VERDICT, DETAIL, FIX) or ``-o json``:
``{"checks": [{"name", "verdict", "detail", "fix"}], "verdict"}``. Exit 0 when every check
is ok, 2 when something is worth fixing (warn or fail), 1 when kvmrec itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kvmrec import config, host_checks
from kvmrec.cli import safety, where

EXIT_OK, EXIT_FAILED, EXIT_CHANGES = 0, 1, 2


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "doctor", help="check that this host can run guests, with a fix for each problem"
    )
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("--connect", default=None, help="libvirt URI (default: the service's)")
    parser.add_argument("--ovsdb", default=None, help="OVSDB socket (default: the service's)")
    parser.add_argument(
        "--store", default=None, metavar="URL", help="store; etcd://HOST:PORT[/PREFIX] is checked"
    )
    safety.add_disk_options(parser)
    config.add_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = where.cli_settings(args, warn=False)
    target = host_checks.Target(
        connect=settings.connect,
        ovsdb=settings.ovsdb,
        disk_roots=tuple(settings.disk_roots),
        store=args.store,
    )
    try:
        checks = host_checks.run(target)
    except Exception as exc:  # a check that broke is kvmrec's failure, not the host's
        print(f"kvmrec doctor: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verdict = host_checks.overall(checks)
    if args.output == "json":
        body = {"checks": [c.as_dict() for c in checks], "verdict": verdict}
        print(json.dumps(body, indent=2))
    else:
        print(table(checks))
    return EXIT_OK if verdict == host_checks.OK else EXIT_CHANGES


def table(checks: list[host_checks.Check]) -> str:
    """One row a check: CHECK, VERDICT, DETAIL and FIX ("-" for none), in columns."""
    rows = [("CHECK", "VERDICT", "DETAIL", "FIX")]
    rows += [(c.name, c.verdict, c.detail, c.fix or "-") for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )
