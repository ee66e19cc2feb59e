"""``kvmrec guest DOMAIN reboot|time|fsinfo|users``: the rest of the guest agent's table.

``reboot`` goes through the agent and falls back to the ACPI power button when the agent
does not answer (or the guest has none), saying which; ``time`` is the guest clock and its
offset from the host's; ``fsinfo`` the mounted file systems with used and total bytes;
``users`` who is logged in and since when. Each has ``-o json``. An agent that is silent,
or a qemu-ga without the command, is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from kvmrec.api import quantities
from kvmrec.backends.libvirt.guest_table import GuestTable
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.cli import by_hand

VERBS = {
    "reboot": "reboot the guest through its agent (the ACPI power button as a fallback)",
    "time": "the guest clock and its offset from the host's",
    "fsinfo": "the guest's mounted file systems: type, devices, used and total",
    "users": "who is logged in to the guest, and since when",
}


def add_verbs(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    for verb, help_ in VERBS.items():
        parser = verbs.add_parser(verb, help=help_)
        parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
        common(parser)


def run(
    args: argparse.Namespace, live: LiveDomain, table: GuestTable, state: Path
) -> tuple[int, str]:
    """The verb's answer on stdout, or (1, the reason) for stderr."""
    if live.state != "running":
        return 1, f"{args.domain} is {live.state}"
    if args.verb == "reboot":
        return 0, _reboot(args, live, table, state)
    if not live.config.guest_agent:
        return 1, (
            f"{args.domain} has no guest agent channel (its manifest does not set "
            "spec.guestAgent: true), so the guest cannot be asked"
        )
    rows: list[tuple[str, ...]]
    if args.verb == "time":
        clock = table.clock(args.domain)
        if args.output == "json":
            return 0, json.dumps({"domain": args.domain, **clock.as_dict()}, indent=2)
        return 0, "\n".join(
            (
                f"guest:  {clock.as_dict()['guest']}",
                f"host:   {clock.as_dict()['host']}",
                f"offset: {clock.offset:+.3f} s (guest minus host)",
            )
        )
    if args.verb == "fsinfo":
        filesystems = table.filesystems(args.domain)
        if args.output == "json":
            items = [f.as_dict() for f in filesystems]
            return 0, json.dumps({"domain": args.domain, "filesystems": items}, indent=2)
        rows = [("MOUNTPOINT", "TYPE", "NAME", "DEVICES", "USED", "TOTAL")]
        for f in filesystems:
            rows.append(
                (
                    f.mountpoint,
                    f.type,
                    f.name,
                    ",".join(f.devices) or "-",
                    _size(f.used),
                    _size(f.total),
                )
            )
        return 0, _table(rows) if filesystems else "no file systems reported by the agent"
    users = table.users(args.domain)
    if args.output == "json":
        items = [u.as_dict() for u in users]
        return 0, json.dumps({"domain": args.domain, "users": items}, indent=2)
    if not users:
        return 0, "nobody is logged in"
    rows = [("USER", "DOMAIN", "SINCE")]
    for u in users:
        d = u.as_dict()
        rows.append((u.user, u.domain or "-", d["loginTime"] or "-"))
    return 0, _table(rows)


def _reboot(args: argparse.Namespace, live: LiveDomain, table: GuestTable, state: Path) -> str:
    method = table.reboot(args.domain, agent=live.config.guest_agent)
    how = "through the guest agent" if method == "agent" else "through ACPI"
    fallback = (
        " (the guest agent did not answer)" if method == "acpi" and live.config.guest_agent else ""
    )
    store = by_hand.open_store(state)
    try:
        by_hand.record(store, args.domain, "Rebooted", f"rebooted {how} by hand{fallback}")
    finally:
        if store is not None:
            store.close()
    if args.output == "json":
        return json.dumps({"domain": args.domain, "method": method}, indent=2)
    return f"{args.domain}: reboot asked {how}{fallback}"


def _size(nbytes: int | None) -> str:
    return quantities.format_bytes(nbytes) if nbytes is not None else "-"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
