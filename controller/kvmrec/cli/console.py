"""``kvmrec console DOMAIN``: this terminal on the guest's serial console, as ``virsh
console`` does.

The terminal goes into raw mode (every key, Ctrl+C included, goes to the guest) and comes
back as it was however the session ends. Ctrl+] detaches (exit 0); so does the guest
stopping or another session forcing the console away (``--force`` is that other session).
The guest's output is copied by a thread of its own, so neither side waits for the other.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import threading
import tty
from typing import Any

from kvmrec import config
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.console import Console
from kvmrec.cli import where

ESCAPE = b"\x1d"  # Ctrl+]


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "console", help="attach to a guest's serial console (Ctrl+] detaches)"
    )
    parser.add_argument("domain", help="the domain")
    parser.add_argument("--connect", default=None, help="libvirt URI (default: the service's)")
    parser.add_argument(
        "--force", action="store_true", help="take the console over from another session"
    )
    config.add_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    uri = where.cli_settings(args, warn=False).connect
    try:
        console = Console(uri, args.domain, force=args.force)
    except BackendError as exc:
        print(f"kvmrec console: {exc}", file=sys.stderr)
        return 1
    print(
        f"Connected to domain '{args.domain}'\r\nEscape character is ^] (Ctrl + ])\r",
        file=sys.stderr,
    )
    try:
        attach(console, sys.stdin.fileno(), sys.stdout.fileno())
    finally:
        console.close()
    print("\r", file=sys.stderr)
    return 0


def attach(console: Console, stdin: int, stdout: int) -> None:
    """Copy between the terminal and the console until Ctrl+] or the console closes."""
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    closed_r, closed_w = os.pipe()
    reader = threading.Thread(
        target=_copy_out, args=(console, stdout, closed_w), name="console-out", daemon=True
    )
    try:
        if saved is not None:
            tty.setraw(stdin)
        reader.start()
        while True:
            ready, _, _ = select.select([stdin, closed_r], [], [])
            if closed_r in ready:
                return  # the guest's side went away
            data = os.read(stdin, 1024)
            if not data:
                return  # end of input
            before, escape, _ = data.partition(ESCAPE)
            if before:
                console.write(before)
            if escape:
                return
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        console.close()
        reader.join(2.0)
        os.close(closed_r)
        os.close(closed_w)


def _copy_out(console: Console, stdout: int, closed: int) -> None:
    while data := console.read():
        try:
            os.write(stdout, data)
        except OSError:
            break
    os.write(closed, b"x")
