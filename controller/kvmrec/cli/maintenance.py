"""``kvmrec cordon HOST``, ``uncordon HOST`` and ``drain HOST [--force] [--timeout S]``.

cordon: the scheduler places nothing new on the host; what runs there stays. drain:
cordon, then a live migration of every Domain placed there (the scheduler picks each
target), waiting until each has ended; it lists what could not move: a Domain pinned by
``spec.host``, or one whose migration was blocked or failed (with the reason). With
``--force`` those that are not pinned are stopped and started elsewhere (the host stops
the guest and removes its placement; the scheduler places it again). Exit 0 when the host
is empty, 2 when something is left on it, 1 when kvmrec itself failed.
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
from kvmrec.store.base import StoreError
from kvmrec.store.fleet import FleetControl


def add_parser(commands: Any) -> None:
    for name, help_ in (
        ("cordon", "take no new Domains on a host (those on it stay)"),
        ("uncordon", "let a host take new Domains again"),
        ("drain", "cordon a host and move every Domain off it, live where it can"),
    ):
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help_)
        parser.add_argument("host", metavar="HOST")
        if name == "drain":
            parser.add_argument(
                "--force",
                action="store_true",
                help="stop and start elsewhere what cannot migrate live (not pinned ones)",
            )
            parser.add_argument(
                "--timeout", type=float, default=600.0, metavar="S", help="(default 600)"
            )
        where.add_state(parser, store=True)
        config.add_option(parser)
        parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    control = open_control(args)
    if control is None:
        return 1
    try:
        if control.hosts.host(args.host) is None:
            print(f"kvmrec {args.command}: {args.host}: no such host", file=sys.stderr)
            return 2
        if args.command == "uncordon":
            control.hosts.set_cordoned(args.host, False)
            control.hosts.set_draining(args.host, False)
            print(f"{args.host} uncordoned")
            return 0
        control.hosts.set_cordoned(args.host, True)
        print(f"{args.host} cordoned")
        if args.command == "cordon":
            return 0
        return drain(control, args.host, force=args.force, timeout=args.timeout)
    except StoreError as exc:
        print(f"kvmrec {args.command}: {exc}", file=sys.stderr)
        return 1
    finally:
        control.close()


def placed_on(control: FleetControl, host: str) -> list[ObjectKey]:
    return sorted(
        k for k, p in control.placements.placements("Domain").items() if p.placement.host == host
    )


def drain(control: FleetControl, host: str, *, force: bool, timeout: float) -> int:
    control.hosts.set_draining(host, True)
    deadline = time.monotonic() + timeout
    left: dict[ObjectKey, str] = {}
    waiting = _request_all(control, host, left)
    _wait(control, waiting, deadline, left)
    if force:
        forced = [k for k, why in left.items() if "spec.host" not in why]
        for key in forced:
            try:
                requests.request(control, key, None, SystemClock().wall(), mode="restart")
                del left[key]
            except requests.Refused as exc:
                left[key] = str(exc)
        _wait(control, forced, deadline, left)
        # Each forced Domain leaves the host's placements; the scheduler takes it from there.
    for key in placed_on(control, host):
        left.setdefault(key, "still placed here")
    for key, why in sorted(left.items()):
        print(f"{key} stays on {host}: {why}")
    if not left:
        control.hosts.set_draining(host, False)
        print(f"{host} drained")
        return 0
    return 2


def _request_all(control: FleetControl, host: str, left: dict[ObjectKey, str]) -> list[ObjectKey]:
    waiting = []
    for key in placed_on(control, host):
        try:
            m = requests.request(control, key, None, SystemClock().wall())
            print(f"{key}: migrating to {m.to}")
            waiting.append(key)
        except requests.Refused as exc:
            left[key] = str(exc).removeprefix(f"{key}: ")
    return waiting


def _wait(
    control: FleetControl, keys: list[ObjectKey], deadline: float, left: dict[ObjectKey, str]
) -> None:
    pending = set(keys)
    while pending and time.monotonic() < deadline:
        for key in sorted(pending):
            m = control.migrations.migration(key)
            if m is None or m.final:
                pending.discard(key)
                if m is not None and m.state != "Succeeded":
                    left[key] = f"{m.state}: {m.reason}"
                elif m is not None:
                    print(f"{key}: {m.reason}")
        time.sleep(1.0)
    for key in pending:
        left[key] = "still migrating when the timeout passed"
