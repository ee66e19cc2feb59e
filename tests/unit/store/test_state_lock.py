"""One ``kvmrec run`` per state file: an exclusive flock on ``<state>.lock``, held for life."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmrec.cli.main import main
from kvmrec.store.lock import StateInUse, StateLock, lock_path

HOLD = """
import sys
from pathlib import Path
from kvmrec.store.lock import StateLock
lock = StateLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin (or kills us)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``tmp_path/state.db``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "state.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_the_lock_file_is_beside_the_state_file() -> None:
    assert lock_path(Path("/var/lib/kvmrec/state.db")) == Path("/var/lib/kvmrec/state.db.lock")


def test_acquire_writes_our_pid_and_release_lets_the_next_one_in(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state.db"
    lock = StateLock.acquire(state)
    assert lock.held
    assert lock.path.read_text() == f"{os.getpid()}\n"
    lock.release()
    lock.release()  # idempotent
    assert not lock.held
    assert lock.path.exists()  # never unlinked: see the module docstring
    with StateLock.acquire(state) as again:
        assert again.held
    assert not again.held


def test_a_second_lock_in_another_process_is_refused_naming_file_and_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    state = tmp_path / "state.db"
    with pytest.raises(StateInUse) as caught:
        StateLock.acquire(state)
    assert caught.value.pid == holder.pid
    message = str(caught.value)
    assert str(state) in message
    assert f"pid {holder.pid}" in message
    assert str(lock_path(state)) in message


def test_the_lock_goes_with_its_holder_even_on_kill_9(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    with StateLock.acquire(tmp_path / "state.db") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_holder_that_exits_normally_releases_it(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(10)
    StateLock.acquire(tmp_path / "state.db").release()


def test_one_process_cannot_hold_it_twice(tmp_path: Path) -> None:
    # flock belongs to the open file, not the process: a second open conflicts too.
    with StateLock.acquire(tmp_path / "state.db"), pytest.raises(StateInUse) as caught:
        StateLock.acquire(tmp_path / "state.db")
    assert caught.value.pid == os.getpid()


def test_kvmrec_run_on_a_locked_state_exits_1_without_touching_the_store(
    tmp_path: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        code = main(
            [
                "run",
                "--state",
                str(state),
                "--manifests",
                str(tmp_path),
                "--connect",
                "test:///default",
                "--config",
                os.devnull,
            ]
        )
    finally:  # main() configured the root logger: leave it as the next test expects it
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 1
    err = capsys.readouterr().err
    assert f"kvmrec run: {state} is in use by another kvmrec run (pid {holder.pid}" in err
    assert not state.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db.lock"]
