"""``kvmrec reload``: make the running service reload, and return once it has.

The unit's ``ExecReload=`` (manifests/kvmrec.service), so that ``systemctl reload kvmrec``
returns only when the new settings are in force: SIGHUP to the service, then wait until the
service records a reload that began after the signal (kvmrec/reloads.py). Exit 0 when that
reload succeeded; 1 with the reason when it failed (the configuration file does not parse:
the service keeps its running configuration), when it did not finish within ``--timeout``,
when the service exits meanwhile, or when no service runs on the state file.

The service is the one that holds the state file's lock (found as every command finds the
state: cli/where.py); ``--pid`` (systemd's ``$MAINPID``) must be that one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmrec import config, reloads
from kvmrec.cli import where
from kvmrec.store.lock import holder

POLL = 0.02  # seconds; a reload takes milliseconds, a person waits for the prompt


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "reload",
        help="make the running service re-read its configuration; return once it is in force",
    )
    where.add_state(parser, "the state file the service runs on")
    parser.add_argument(
        "--pid",
        type=int,
        default=None,
        help="the service's pid (systemd's $MAINPID); default: the holder of the state's lock",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the reload to finish (default 60)",
    )
    config.add_option(parser)  # last: it tracks the flags added above
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        state = where.cli_config(args).settings.state
    except config.ConfigError:
        # The service reads the same file and says why in the record; it is still asked
        # (a reload rescans the manifests, too). Its state is where flags, the
        # environment or the default put it.
        variable = os.environ.get(config.ENVIRONMENT["state"])
        state = args.state or (Path(variable) if variable else where.flags_of(args).state)
    try:
        return _reload(state, args.pid, time.monotonic() + args.timeout)
    except _Failed as exc:
        print(f"kvmrec reload: {exc}", file=sys.stderr)
        return 1


class _Failed(Exception):
    pass


def _reload(state: Path, wanted: int | None, deadline: float) -> int:
    pid = holder(state)
    if pid is None:
        raise _Failed(f"no kvmrec service is running on {state}")
    if wanted is not None and wanted != pid:
        raise _Failed(f"pid {wanted} is not the service on {state}: pid {pid} is")
    # The service records itself once it is ready; a reload asked for sooner waits for it.
    before = _wait(state, pid, deadline, lambda _r: True, "to be ready")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise _Failed(f"cannot signal the service (pid {pid}): {exc.strerror}") from None
    done = _wait(state, pid, deadline, lambda r: r.finished > before.started, "to reload")
    if done.error is not None:
        raise _Failed(f"the reload failed, the running configuration is kept: {done.error}")
    print(f"kvmrec reload: the service (pid {pid}) reloaded; the new settings are in force")
    return 0


def _wait(
    state: Path,
    pid: int,
    deadline: float,
    until: Callable[[reloads.Reloads], bool],
    what: str,
) -> reloads.Reloads:
    """The service's record once ``until(record)`` holds."""
    while True:
        record = reloads.read(state)
        if record is not None and record.pid == pid and until(record):
            return record
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise _Failed(f"the service (pid {pid}) exited while waiting for it {what}") from None
        except PermissionError:
            pass  # it exists; only root may signal it, which os.kill(SIGHUP) will tell
        if time.monotonic() >= deadline:
            raise _Failed(f"timed out waiting for the service (pid {pid}) {what}")
        time.sleep(POLL)
