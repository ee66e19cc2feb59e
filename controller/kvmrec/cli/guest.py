"""``kvmrec guest DOMAIN info|ping|set-password USER|reboot|time|fsinfo|users``: ask a
guest's QEMU agent (the last four: cli/guest_table.py).

``info`` prints what the guest says about itself (host name, OS, kernel, addresses; the
DHCP leases of its libvirt networks when the agent gives none), ``ping`` whether and how
fast the agent answers, ``set-password`` sets a user's password inside the guest.

A password never comes from the command line (where ``ps`` and shell history see it) nor
from a manifest (which is stored and shown): it is read from a file (``--password-file``)
or standard input, first line only. What is done is recorded as an event of the domain
when a state file is at hand (never the password).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kvmrec import config
from kvmrec.backends import protocols
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.guest_agent import GuestAgent
from kvmrec.backends.libvirt.guest_table import GuestTable
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.libvirt.live import LiveDomain
from kvmrec.cli import by_hand, guest_table, where


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "guest", help="ask a guest's agent: info, ping, set-password, reboot, time, fsinfo, users"
    )
    parser.add_argument("domain")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--connect", default=None, help="libvirt URI")
        where.add_state(p, "state file, for the events")
        config.add_option(p)  # last of the options that are settings: it tracks them

    info = verbs.add_parser("info", help="host name, OS and addresses of the guest")
    info.add_argument("-o", "--output", choices=["table", "json"], default="table")
    common(info)
    common(verbs.add_parser("ping", help="whether the guest agent answers, and how fast"))
    password = verbs.add_parser(
        "set-password", help="set USER's password (read from --password-file or stdin)"
    )
    common(password)
    password.add_argument("user")
    password.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="read the password from this file's first line (default: standard input)",
    )
    guest_table.add_verbs(verbs, common)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = where.cli_settings(args)
    hv = Hypervisor(settings.connect)
    try:
        hv.open()
        live = hv.get_domain(args.domain)
        if live is None:
            print(f"kvmrec guest: no domain named {args.domain}", file=sys.stderr)
            return 1
        agent = GuestAgent(hv)
        if args.verb == "info":
            return _info(args, live, agent)
        if args.verb == "ping":
            seconds = agent.ping(args.domain)
            print(f"the guest agent of {args.domain} answered in {seconds * 1000:.0f} ms")
            return 0
        if args.verb == "set-password":
            return _set_password(args, agent, settings.state)
        code, text = guest_table.run(args, live, GuestTable(agent), settings.state)
        if code:
            print(f"kvmrec guest {args.verb}: {text}", file=sys.stderr)
        else:
            print(text)
        return code
    except BackendError as exc:
        print(f"kvmrec guest {args.verb}: {exc}", file=sys.stderr)
        return 1
    finally:
        hv.close()


def _info(args: argparse.Namespace, live: LiveDomain, agent: protocols.GuestAgent) -> int:
    if live.state != "running":
        print(f"kvmrec guest info: {args.domain} is {live.state}", file=sys.stderr)
        return 1
    if not live.config.guest_agent:
        print(
            f"kvmrec guest info: {args.domain} has no guest agent channel (its manifest "
            "does not set spec.guestAgent: true), so the guest cannot be asked",
            file=sys.stderr,
        )
        return 1
    info = agent.info(
        args.domain,
        agent=live.config.guest_agent,
        leases=any(i.network for i in live.config.interfaces),
    )
    if args.output == "json":
        print(json.dumps({"domain": args.domain, **info.as_dict()}, indent=2))
        return 0
    print(f"agent:    {'answers' if info.agent else 'does not answer'}")
    print(f"hostname: {info.hostname or '-'}")
    print(f"os:       {info.os or '-'}")
    print(f"kernel:   {info.kernel or '-'}")
    for a in info.addresses:
        print(f"address:  {a.address}/{a.prefix} on {a.interface} ({a.mac}, from {a.source})")
    if not info.addresses:
        print("address:  -")
    return 0


def _read_password(path: Path | None) -> str:
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise BackendError(f"cannot read the password file: {exc.strerror}") from exc
    else:
        if sys.stdin.isatty():
            print("password: ", end="", file=sys.stderr, flush=True)
        text = sys.stdin.readline()
    password = text.splitlines()[0] if text else ""
    if not password:
        where = path or "standard input"
        raise BackendError(f"no password in {where} (its first line is the password)")
    return password


def _set_password(args: argparse.Namespace, agent: protocols.GuestAgent, state: Path) -> int:
    password = _read_password(args.password_file)
    agent.set_password(args.domain, args.user, password)
    store = by_hand.open_store(state)
    try:
        message = f"password of {args.user} set through the guest agent by hand"
        by_hand.record(store, args.domain, "PasswordSet", message)
    finally:
        if store is not None:
            store.close()
    print(f"password of {args.user} in {args.domain} set")
    return 0
