"""``kvmrec migrate DOMAIN [--to HOST] [--copy-storage] [--wait]``: move a running guest;
``kvmrec migrate DOMAIN --cancel [--wait]``: stop its migration.

The request goes to the store (one transaction, against the placement it read); the host
the Domain runs on carries it out with libvirt's peer-to-peer live migration and moves
the placement only once the guest runs on the target. Without ``--to`` the scheduler's
filters and score pick a host other than the current one. ``--wait`` follows the request
until it ends: exit 0 when it succeeded, 2 when it failed or was cancelled, 1 when kvmrec
itself failed (no store). With ``--cancel`` the guest stays where it runs: a Pending
request ends at once, a Running one when its source host has aborted libvirt's job;
``--wait`` then exits 0 once it is Cancelled, 2 when it ended otherwise (libvirt finished
first) or when there was no migration under way.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from kvmrec import config
from kvmrec.api.objects import ObjectKey
from kvmrec.cli import where
from kvmrec.cli.fleet_control import open_control
from kvmrec.engine.clock import SystemClock
from kvmrec.fleet import requests
from kvmrec.fleet.migration import describe
from kvmrec.store.base import StoreError
from kvmrec.store.fleet import FleetControl


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "migrate", help="move a running guest to another host of the fleet, live"
    )
    parser.add_argument("domain", metavar="DOMAIN")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--to", default=None, metavar="HOST", help="the target (default: chosen)")
    what.add_argument(
        "--cancel", action="store_true", help="stop its migration; the guest stays where it runs"
    )
    parser.add_argument(
        "--copy-storage",
        action="store_true",
        help="copy the guest's local disks too (they are made at the target first)",
    )
    parser.add_argument("--wait", action="store_true", help="follow it until it ends")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="with --wait (default 600)"
    )
    where.add_state(parser, store=True)
    config.add_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    control = open_control(args)
    if control is None:
        return 1
    key = ObjectKey("Domain", args.domain)
    if args.cancel:
        if args.copy_storage:
            print("kvmrec migrate: --copy-storage does not go with --cancel", file=sys.stderr)
            control.close()
            return 2
        return _cancel(control, key, args)
    try:
        try:
            m = requests.request(
                control, key, args.to, SystemClock().wall(), copy_storage=args.copy_storage
            )
        except requests.Refused as exc:
            print(f"kvmrec migrate: {exc}", file=sys.stderr)
            return 2
        print(f"{key}: migration from {m.source} to {m.to} requested")
        if not args.wait:
            return 0
        return follow(control, key, args.timeout)
    except StoreError as exc:
        print(f"kvmrec migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        control.close()


def _cancel(control: FleetControl, key: ObjectKey, args: argparse.Namespace) -> int:
    try:
        try:
            m = requests.cancel(control.migrations, key)
        except requests.Refused as exc:
            print(f"kvmrec migrate: {exc}", file=sys.stderr)
            return 2
        said = "cancelled" if m.final else "cancel requested"
        print(f"{key}: migration from {m.source} to {m.to}: {said}")
        if not args.wait:
            return 0
        return follow(control, key, args.timeout, ended="Cancelled")
    except StoreError as exc:
        print(f"kvmrec migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        control.close()


def follow(control: FleetControl, key: ObjectKey, timeout: float, ended: str = "Succeeded") -> int:
    """Print the request's state as it changes until it is final: 0 when it ended
    ``ended``, else 2."""
    deadline = time.monotonic() + timeout
    said = ""
    while time.monotonic() < deadline:
        m = control.migrations.migration(key)
        if m is None:
            print(f"{key}: the request is gone", file=sys.stderr)
            return 2
        line = f"{key}: {m.state}" + (f": {m.reason}" if m.reason else "")
        if m.state == "Running" and m.progress:
            line += f" ({describe(m.progress)})"
        if line != said:
            print(line, flush=True)
            said = line
        if m.final:
            return 0 if m.state == ended else 2
        time.sleep(1.0)
    print(f"{key}: still {said} after {timeout:.0f}s", file=sys.stderr)
    return 2
