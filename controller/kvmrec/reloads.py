"""The reloads a running service has begun and finished, for ``kvmrec reload`` to wait on.

``systemctl reload kvmrec`` must return only once the new settings are in force. systemd
252 cannot wait for the ``READY=1`` that follows ``RELOADING=1`` (``Type=notify-reload``
came in 253), so the unit's ``ExecReload=`` is ``kvmrec reload`` (cli/reload.py): it
sends SIGHUP and waits for the daemon's word, read from ``<state>.reload`` beside the
state lock (store/lock.py): the daemon's pid, how many reloads it began and finished, and
why the last one failed, if it did. A reload is one of ours when it *began* after our
signal: we wait for ``finished >= started + 1`` as it stood when we sent it, so a reload
already under way when the signal came does not count.

The file is replaced whole (written beside, then renamed), so a reader never sees half of
it; the pid tells a record of this service from one a previous service left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Reloads", "path_for", "read", "write"]


@dataclass(frozen=True)
class Reloads:
    pid: int
    started: int = 0
    finished: int = 0
    error: str | None = None
    """Why the last finished reload failed; None when it succeeded (or none has run)."""


def path_for(state: Path) -> Path:
    return state.with_name(state.name + ".reload")


def write(state: Path, reloads: Reloads) -> None:
    """Replace the record; raises OSError. A fleet host keeps no state file, but its
    record still lives where its ``state`` setting says (created 0700 if missing)."""
    target = path_for(state)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".new")
    body = {
        "pid": reloads.pid,
        "started": reloads.started,
        "finished": reloads.finished,
        "error": reloads.error,
    }
    partial.write_text(json.dumps(body) + "\n")
    os.replace(partial, target)


def read(state: Path) -> Reloads | None:
    """The record, or None when there is none (or it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        body = json.loads(path_for(state).read_text())
        return Reloads(
            pid=int(body["pid"]),
            started=int(body["started"]),
            finished=int(body["finished"]),
            error=None if body["error"] is None else str(body["error"]),
        )
    return None
