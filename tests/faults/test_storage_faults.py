"""Faults of the state file: locked by another process, read-only, and a full disk.

In each case a running ``kvmrec run`` receives a manifest change while its sqlite state
cannot be written. It must not crash, must say why (log, status), and must apply the change
with its own revision once the state file can be written again. Run with ``-s`` to see the
figures the README quotes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, domain_manifest, wait_for

NAME_SUFFIX = "st"


def _manifest(name: str, domain_type: str, vcpus: int) -> str:
    return domain_manifest(name, domain_type, vcpus=vcpus, runStrategy="Halted")


def _history(ctl: Controller, name: str) -> list[int]:
    done = subprocess.run(
        ctl.command("history", f"Domain/{name}", "--state", str(ctl.state), "-o", "json"),
        capture_output=True,
        text=True,
        env=ctl.env(),
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        return []
    return [r["generation"] for r in json.loads(done.stdout)["revisions"]]


def _vcpus(conn: Any, name: str) -> int | None:
    try:
        return int(conn.lookupByName(name).info()[3])
    except Exception:
        return None


def _applied(ctl: Controller, conn: Any, name: str, generation: int, vcpus: int) -> bool:
    obj = ctl.object(name)
    return bool(
        obj
        and obj["generation"] == generation
        and obj["observedGeneration"] == generation
        and obj["synced"]
        and _vcpus(conn, name) == vcpus
    )


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the storage faults mount tmpfs: run as root (as make test does)")


def _converge(ctl: Controller, conn: Any, name: str, dtype: str) -> None:
    ctl.write("x.yaml", _manifest(name, dtype, 1))
    ctl.start(resync=3600)
    wait_for(lambda: _applied(ctl, conn, name, 1, 1), timeout=30, what="generation 1")


def test_state_locked_by_another_process(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-{NAME_SUFFIX}"
    _converge(controller, conn, name, stack["KVMREC_DOMAIN_TYPE"])
    holder = sqlite3.connect(str(controller.state), timeout=1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked_at = time.monotonic()
    try:
        controller.write("x.yaml", _manifest(name, stack["KVMREC_DOMAIN_TYPE"], 2))
        wait_for(
            lambda: "database is locked" in controller.log_text(),
            timeout=20,
            what="kvmrec reporting the lock",
        )
        reported_after = time.monotonic() - locked_at
        time.sleep(max(0.0, 15 - (time.monotonic() - locked_at)))
        assert controller.running, controller.log_text()[-3000:]
        assert (controller.object(name) or {}).get("generation") == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    released = time.monotonic()
    wait_for(
        lambda: _applied(controller, conn, name, 2, 2),
        timeout=30,
        what="the change applied after the lock is released",
    )
    applied_after = time.monotonic() - released
    assert _history(controller, name) == [1, 2]
    assert controller.running
    print(
        f"\nLOCKED held={released - locked_at:.1f}s reported_after={reported_after:.1f}s "
        f"applied_after_release={applied_after:.1f}s history=[1, 2]"
    )


def _immutable(files: list[Path], on: bool) -> None:
    for path in files:
        if path.exists():
            subprocess.run(
                ["chattr", "+i" if on else "-i", str(path)], check=True, capture_output=True
            )


def test_state_made_read_only(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    """``chattr +i`` on the db, -wal and -shm: unlike chmod it stops root, and unlike a
    remount it works while kvmrec holds the files open for writing (a ro remount of a
    filesystem with files open for writing is refused with EBUSY)."""
    _require_root()
    name = f"{prefix}-{NAME_SUFFIX}"
    dtype = stack["KVMREC_DOMAIN_TYPE"]
    files = [controller.state.with_name(controller.state.name + s) for s in ("", "-wal", "-shm")]
    _converge(controller, conn, name, dtype)
    log_before = len(controller.log_text())
    _immutable(files, True)
    ro_at = time.monotonic()
    try:
        controller.write("x.yaml", _manifest(name, dtype, 2))
        wait_for(
            lambda: "on_change failed" in controller.log_text()[log_before:],
            timeout=20,
            what="kvmrec reporting that it cannot store the change",
        )
        reported_after = time.monotonic() - ro_at
        time.sleep(3)
        assert controller.running, controller.log_text()[-3000:]
        code, body = controller.status()
        assert code in (0, 2) and body["objects"][0]["generation"] == 1, (code, body)
    finally:
        _immutable(files, False)
    rw_at = time.monotonic()
    wait_for(
        lambda: _applied(controller, conn, name, 2, 2),
        timeout=30,
        what="the change applied once the state is writable again",
    )
    applied_after = time.monotonic() - rw_at
    assert _history(controller, name) == [1, 2]
    assert controller.running
    errors = [
        ln
        for ln in controller.log_text()[log_before:].splitlines()
        if ln.startswith("kvmrec.store.base.StoreError")
    ]
    assert errors, "no StoreError line names the state file"
    print(
        f"\nREADONLY reported_after={reported_after:.1f}s applied_after_writable="
        f"{applied_after:.1f}s history=[1, 2] store_errors={len(errors)} "
        f"first={errors[0][:200]!r}"
    )


def test_state_on_a_full_disk(
    tmp_path: Path, controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    _require_root()
    name = f"{prefix}-{NAME_SUFFIX}"
    dtype = stack["KVMREC_DOMAIN_TYPE"]
    with _tmpfs(tmp_path / "full", "2m") as mnt:
        controller.state = mnt / "state.db"
        try:
            _converge(controller, conn, name, dtype)
            controller.write("x.yaml", _manifest(name, dtype, 2))
            wait_for(
                lambda: _applied(controller, conn, name, 2, 2),
                timeout=30,
                what="generation 2 before the disk fills",
            )
            filler = mnt / "filler"
            with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:  # until ENOSPC
                    f.write(b"\0" * 4096)
            full_at = time.monotonic()
            log_before = len(controller.log_text())
            # Two edits while full: the last one must land, with the next generation.
            controller.write("x.yaml", _manifest(name, dtype, 3))
            time.sleep(1)
            controller.write("x.yaml", _manifest(name, dtype, 4))
            wait_for(
                lambda: "database or disk is full" in controller.log_text()[log_before:],
                timeout=30,
                what="kvmrec reporting the full disk",
            )
            reported_after = time.monotonic() - full_at
            time.sleep(2)
            assert controller.running, controller.log_text()[-3000:]
            filler.unlink()
            freed_at = time.monotonic()
            wait_for(
                lambda: _applied(controller, conn, name, 3, 4),
                timeout=30,
                what="the last edit applied after freeing space",
            )
            applied_after = time.monotonic() - freed_at
            assert _history(controller, name) == [1, 2, 3]
            assert controller.running
        finally:
            controller.stop()
    full_lines = controller.log_text()[log_before:].count("database or disk is full")
    print(
        f"\nDISKFULL reported_after={reported_after:.1f}s log_lines={full_lines} "
        f"applied_after_free={applied_after:.1f}s history=[1, 2, 3]"
    )


def test_status_exits_1_when_the_state_cannot_be_read(
    tmp_path: Path, controller: Controller
) -> None:
    cases = {}
    controller.state = tmp_path / "missing.db"
    cases["missing"] = controller.state
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite\n" * 100)
    cases["garbage"] = garbage
    directory = tmp_path / "adir.db"
    directory.mkdir()
    cases["directory"] = directory
    for what, path in cases.items():
        done = subprocess.run(
            controller.command("status", "--state", str(path)),
            capture_output=True,
            text=True,
            env=controller.env(),
            timeout=30,
            check=False,
        )
        assert done.returncode == 1, (what, done)
        assert done.stderr.startswith("kvmrec status: "), (what, done.stderr)
        assert str(path) in done.stderr and "Traceback" not in done.stderr, (what, done.stderr)
        print(f"\nSTATUS {what}: exit 1: {done.stderr.strip()}")
