"""The manifest directory source, against real directories and the real inotify observer.

The pure :func:`scan` is tested directly. The live tests run a :class:`DirectorySource` with
a short debounce and wait, with a timeout, for the state they expect to be delivered. A
"dropped event" is produced honestly rather than by pausing watchdog: a manifest that is a
symlink to a file outside the watched tree changes without any inotify event inside it,
exactly like a change inotify lost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmrec.sources import directory, scanning
from kvmrec.sources.directory import DirectorySource, burst_deadline
from kvmrec.sources.scanning import Snapshot, scan

# watchdog's inotify thread warns when ``mkdir -p a/b`` makes it add the watch for ``b`` twice
# (once while walking ``a``, once for the IN_CREATE of ``b``). The duplicate is harmless, but
# under the project's ``filterwarnings = error`` the warning is raised inside that thread and
# kills it, silently ending all events for the rest of the test.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Callback with id .* already exists for watch:RuntimeWarning"
)

DEBOUNCE = 0.05

is_root = os.geteuid() == 0


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def contents(snapshot: Snapshot) -> dict[str, bytes]:
    return {path: f.data for path, f in snapshot.files.items()}


class Recorder:
    """An ``on_change`` that remembers every snapshot and the thread that delivered it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: list[Snapshot] = []
        self.threads: list[str] = []

    def __call__(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots.append(snapshot)
            self.threads.append(threading.current_thread().name)

    @property
    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            return list(self._snapshots)

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]

    def last_is(self, expected: dict[str, bytes], *, complete: bool = True) -> bool:
        last = self.last
        return last.complete is complete and contents(last) == expected


MakeSource = Callable[..., tuple[DirectorySource, Recorder]]


@pytest.fixture
def make_source() -> Iterator[MakeSource]:
    sources: list[DirectorySource] = []

    def make(
        root: Path,
        *,
        on_change: Callable[[Snapshot], None] | None = None,
        debounce: float = DEBOUNCE,
        rescan_interval: float = 60.0,
        max_file_bytes: int = 1_048_576,
    ) -> tuple[DirectorySource, Recorder]:
        recorder = Recorder()
        source = DirectorySource(
            root,
            on_change or recorder,
            debounce=debounce,
            rescan_interval=rescan_interval,
            max_file_bytes=max_file_bytes,
        )
        sources.append(source)
        return source, recorder

    yield make
    for source in sources:
        source.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "manifests"
    path.mkdir()
    return path


def make_configmap(root: Path, version: str, files: dict[str, str]) -> None:
    """Lay out ``root`` the way the kubelet's atomic writer does, or update it the same way."""
    data_dir = root / version
    for rel, text in files.items():
        write(data_dir / rel, text)
    old = os.readlink(root / "..data") if (root / "..data").is_symlink() else None
    os.symlink(version, root / "..data_tmp")
    os.replace(root / "..data_tmp", root / "..data")
    for rel in files:
        top = rel.split("/")[0]
        if not (root / top).is_symlink():
            os.symlink(f"..data/{top}", root / top)
    if old is not None:
        shutil.rmtree(root / old)


# -- scan ----------------------------------------------------------------------------------


def test_scan_reads_manifests_recursively(root: Path) -> None:
    write(root / "web.yaml", "kind: Domain\n")
    write(root / "team-a" / "db.yml", "kind: Domain # db\n")
    write(root / "team-a" / "deep" / "net.json", "{}")

    snapshot = scan(root)

    assert snapshot.complete
    assert snapshot.error is None
    assert snapshot.errors == {}
    assert list(snapshot.files) == ["team-a/db.yml", "team-a/deep/net.json", "web.yaml"]
    web = snapshot.files["web.yaml"]
    assert web.path == "web.yaml"
    assert web.data == b"kind: Domain\n"
    assert web.digest == hashlib.sha256(b"kind: Domain\n").hexdigest()


@pytest.mark.parametrize(
    "ignored",
    [
        pytest.param("notes.txt", id="not-a-manifest-suffix"),
        pytest.param("README", id="no-suffix"),
        pytest.param(".hidden.yaml", id="dotfile"),
        pytest.param(".web.yaml.swp", id="vim-swap"),
        pytest.param(".#web.yaml", id="emacs-lock"),
        pytest.param("web.yaml~", id="backup-tilde"),
        pytest.param("#web.yaml#", id="emacs-autosave"),
        pytest.param("web.yaml.tmp", id="tmp"),
        pytest.param("web.yaml.part", id="partial-download"),
        pytest.param("web.yaml.dpkg-new", id="dpkg"),
        pytest.param("web.yaml.rpmnew", id="rpm"),
        pytest.param("web.rpmsave.yaml", id="rpm-infix"),
        pytest.param(".git/config.yaml", id="dot-directory"),
        pytest.param("upload.tmp/db.yaml", id="tmp-directory"),
        pytest.param("#draft#/db.yaml", id="autosave-directory"),
        pytest.param("old~/db.yaml", id="backup-directory"),
        pytest.param("..2024_01/db.yaml", id="configmap-internal-directory"),
    ],
)
def test_scan_ignores(root: Path, ignored: str) -> None:
    write(root / "web.yaml", "kept")
    write(root / ignored, "ignored")

    assert list(scan(root).files) == ["web.yaml"]


def test_scan_ignores_what_is_not_a_regular_file(root: Path) -> None:
    write(root / "web.yaml", "kept")
    os.mkfifo(root / "pipe.yaml")  # opening it for reading would block the scan forever
    os.symlink("nowhere.yaml", root / "dangling.yaml")
    os.symlink("/dev/null", root / "null.yaml")

    snapshot = scan(root)

    assert list(snapshot.files) == ["web.yaml"]
    assert snapshot.errors == {}
    assert snapshot.complete


def test_scan_reads_a_configmap_through_its_data_symlinks(root: Path) -> None:
    make_configmap(
        root,
        "..2024_01_01_00_00_00.000000001",
        {"web.yaml": "v1", "team-a/db.yaml": "db v1"},
    )

    snapshot = scan(root)

    assert contents(snapshot) == {"team-a/db.yaml": b"db v1", "web.yaml": b"v1"}


def test_scan_survives_symlink_loops(root: Path) -> None:
    write(root / "sub" / "db.yaml", "db")
    os.symlink("..", root / "sub" / "up")
    os.symlink("sub", root / "alias")  # a second name for the same directory

    snapshot = scan(root)

    # Whichever name sorts first wins; the file is reported once.
    assert list(snapshot.files) == ["alias/db.yaml"]
    assert snapshot.complete


def test_scan_reports_too_large_files_without_their_data(root: Path) -> None:
    write(root / "limit.yaml", b"x" * 10)
    write(root / "big.yaml", b"x" * 11)

    snapshot = scan(root, max_file_bytes=10)

    assert snapshot.files["limit.yaml"].data == b"x" * 10
    assert snapshot.errors.keys() == {"big.yaml"}
    assert snapshot.errors["big.yaml"].startswith("too large: 11 bytes")
    big = snapshot.files["big.yaml"]
    assert big.data == b""
    assert big.digest == hashlib.sha256(b"").hexdigest()
    assert snapshot.complete  # the directory was seen whole; only one file's content was not


def test_a_file_that_grew_after_its_size_was_read_is_read_whole_or_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root / "grown.yaml", b"x" * 8)
    write(root / "over.yaml", b"x" * 12)
    real_fstat = os.fstat

    def stale_fstat(fd: int) -> os.stat_result:
        found = real_fstat(fd)
        # The size as it was before the file grew to what it is now.
        return os.stat_result((*found[:6], 3, *found[7:]))

    monkeypatch.setattr(scanning.os, "fstat", stale_fstat)
    snapshot = scan(root, max_file_bytes=10)

    assert snapshot.files["grown.yaml"].data == b"x" * 8
    assert snapshot.errors.keys() == {"over.yaml"}
    assert snapshot.errors["over.yaml"].startswith("too large: 11 bytes")


def test_scan_reports_an_unresolvable_manifest_as_an_error(root: Path) -> None:
    os.symlink("loop.yaml", root / "loop.yaml")  # ELOOP: there, but never readable

    snapshot = scan(root)

    assert snapshot.errors["loop.yaml"].startswith("unreadable:")
    assert snapshot.files["loop.yaml"].data == b""


@pytest.mark.skipif(is_root, reason="root reads files regardless of their mode")
def test_scan_reports_an_unreadable_file_as_an_error(root: Path) -> None:
    write(root / "secret.yaml", "x")
    (root / "secret.yaml").chmod(0)

    snapshot = scan(root)

    assert snapshot.errors["secret.yaml"].startswith("unreadable:")
    assert snapshot.files["secret.yaml"].data == b""


@pytest.mark.skipif(is_root, reason="root lists directories regardless of their mode")
def test_scan_with_an_unlistable_subdirectory_is_incomplete(root: Path) -> None:
    write(root / "web.yaml", "v1")
    write(root / "locked" / "db.yaml", "db")
    (root / "locked").chmod(0)
    try:
        snapshot = scan(root)
    finally:
        (root / "locked").chmod(0o755)

    assert not snapshot.complete
    assert snapshot.error is not None
    assert "locked" in snapshot.error
    assert contents(snapshot) == {"web.yaml": b"v1"}


def test_scan_of_a_missing_directory_is_incomplete(tmp_path: Path) -> None:
    snapshot = scan(tmp_path / "absent")

    assert not snapshot.complete
    assert snapshot.error is not None
    assert "absent" in snapshot.error
    assert snapshot.files == {}


def test_scan_of_a_file_instead_of_a_directory_is_incomplete(tmp_path: Path) -> None:
    write(tmp_path / "manifests", "oops")

    snapshot = scan(tmp_path / "manifests")

    assert not snapshot.complete
    assert snapshot.error is not None
    assert "not a directory" in snapshot.error


@pytest.mark.parametrize(
    ("first", "last", "debounce", "expected"),
    [
        pytest.param(0.0, 0.0, 0.3, 0.3, id="single-event"),
        pytest.param(0.0, 1.0, 0.3, 1.3, id="burst-extends-the-wait"),
        pytest.param(0.0, 2.9, 0.3, 3.0, id="capped-at-ten-debounces"),
        pytest.param(0.0, 1.95, 0.05, 2.0, id="cap-is-at-least-two-seconds"),
        pytest.param(5.0, 100.0, 0.3, 8.0, id="endless-stream-still-scanned"),
    ],
)
def test_burst_deadline(first: float, last: float, debounce: float, expected: float) -> None:
    assert burst_deadline(first, last, debounce) == pytest.approx(expected)


# -- DirectorySource -----------------------------------------------------------------------


def test_start_delivers_the_initial_snapshot_before_returning(
    root: Path, make_source: MakeSource
) -> None:
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root)

    snapshot = source.start()

    assert recorder.snapshots == [snapshot]
    assert contents(snapshot) == {"web.yaml": b"v1"}
    assert snapshot.complete
    assert recorder.threads[0] != threading.current_thread().name  # the worker's thread


def test_create_modify_delete(root: Path, make_source: MakeSource) -> None:
    source, recorder = make_source(root)
    assert source.start().files == {}

    write(root / "web.yaml", "v1")
    wait_for(lambda: recorder.last_is({"web.yaml": b"v1"}))

    write(root / "web.yaml", "v2")
    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}))

    (root / "web.yaml").unlink()
    wait_for(lambda: recorder.last_is({}))
    assert all(s.complete for s in recorder.snapshots)


def test_editor_save_via_temp_file_and_rename(root: Path, make_source: MakeSource) -> None:
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root)
    source.start()

    # vim: a swap file next to the original; then the new content written to a temporary
    # name and renamed over the original, as most editors and config tools save.
    write(root / ".web.yaml.swp", "swap")
    write(root / "web.yaml.tmp", "v2")
    os.replace(root / "web.yaml.tmp", root / "web.yaml")
    (root / ".web.yaml.swp").unlink()

    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}))
    assert all(list(s.files) == ["web.yaml"] for s in recorder.snapshots)


def test_a_burst_of_writes_is_delivered_once_finished(root: Path, make_source: MakeSource) -> None:
    source, recorder = make_source(root, debounce=0.1)
    source.start()
    chunks = [f"line {i}\n".encode() for i in range(20)]

    # Like cp of a large file: many writes, each an event, closer together than the debounce,
    # and the whole burst lasting longer than it.
    with (root / "web.yaml").open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            time.sleep(0.01)

    wait_for(lambda: recorder.last_is({"web.yaml": b"".join(chunks)}))
    time.sleep(0.2)  # room for a late, stray delivery to show up
    assert len(recorder.snapshots) == 2  # the initial empty one, then only the final state


def test_unchanged_content_is_not_delivered_again(
    root: Path, make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[Path] = []
    real_scan = directory.scan

    def counting_scan(root: Path, *, max_file_bytes: int) -> Snapshot:
        scans.append(root)
        return real_scan(root, max_file_bytes=max_file_bytes)

    monkeypatch.setattr(directory, "scan", counting_scan)
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root)
    source.start()

    write(root / "web.yaml", "v1")  # rewritten, identical: events, a scan, no news
    wait_for(lambda: len(scans) >= 2)
    time.sleep(0.1)

    assert len(recorder.snapshots) == 1


def test_an_idle_source_does_not_rescan_itself(
    root: Path, make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading files makes inotify report IN_OPEN and IN_CLOSE_NOWRITE; if those counted as
    # changes, each scan would trigger the next one and an idle source would spin.
    scans: list[Path] = []
    real_scan = directory.scan

    def counting_scan(root: Path, *, max_file_bytes: int) -> Snapshot:
        scans.append(root)
        return real_scan(root, max_file_bytes=max_file_bytes)

    monkeypatch.setattr(directory, "scan", counting_scan)
    for i in range(5):
        write(root / f"vm{i}.yaml", f"vm {i}")
    source, _ = make_source(root)
    source.start()
    source.rescan()  # one more scan that reads every file while the watch is in place
    wait_for(lambda: len(scans) == 2)

    time.sleep(10 * DEBOUNCE)

    assert len(scans) == 2


def test_nested_directories_created_later_are_watched(root: Path, make_source: MakeSource) -> None:
    source, recorder = make_source(root)  # no periodic rescan within the test: events only
    source.start()

    write(root / "team-a" / "deep" / "db.yml", "db")  # directories and file in one go
    wait_for(lambda: recorder.last_is({"team-a/deep/db.yml": b"db"}))

    (root / "team-b").mkdir()
    time.sleep(2 * DEBOUNCE)  # the new directory is on its own, its watch in place
    write(root / "team-b" / "web.yaml", "web")
    wait_for(lambda: recorder.last_is({"team-a/deep/db.yml": b"db", "team-b/web.yaml": b"web"}))


def test_configmap_update_swaps_the_data_symlink(root: Path, make_source: MakeSource) -> None:
    make_configmap(root, "..2024_01", {"web.yaml": "v1", "team-a/db.yaml": "db v1"})
    source, recorder = make_source(root)
    assert contents(source.start()) == {"team-a/db.yaml": b"db v1", "web.yaml": b"v1"}

    # No manifest file is written: only ..data is renamed, then the old version removed.
    make_configmap(root, "..2024_02", {"web.yaml": "v2", "team-a/db.yaml": "db v2"})

    wait_for(lambda: recorder.last_is({"team-a/db.yaml": b"db v2", "web.yaml": b"v2"}))
    assert all(
        set(s.files) == {"team-a/db.yaml", "web.yaml"} and s.complete for s in recorder.snapshots
    )


def test_removed_directory_is_incomplete_then_picked_up_again(
    root: Path, make_source: MakeSource
) -> None:
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root, rescan_interval=0.2)
    source.start()

    shutil.rmtree(root)
    wait_for(lambda: not recorder.last.complete)
    assert recorder.last.error is not None
    assert not any(s.complete and not s.files for s in recorder.snapshots)

    # Nothing is watched while the directory is gone; the periodic retry finds it again.
    write(root / "web.yaml", "v2")
    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}))


def test_recreated_directory_is_watched_again(root: Path, make_source: MakeSource) -> None:
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root)  # no periodic rescan within the test
    source.start()

    shutil.rmtree(root)
    wait_for(lambda: not recorder.last.complete)  # noticed through inotify alone
    write(root / "web.yaml", "v2")
    source.rescan()
    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}))

    # The watch follows the new directory: this change arrives by event, not by rescan.
    write(root / "db.yaml", "db")
    wait_for(lambda: recorder.last_is({"db.yaml": b"db", "web.yaml": b"v2"}))
    assert not any(s.complete and not s.files for s in recorder.snapshots)


def test_missing_directory_at_start_is_retried(tmp_path: Path, make_source: MakeSource) -> None:
    root = tmp_path / "not-yet"
    source, recorder = make_source(root, rescan_interval=0.2)

    first = source.start()

    assert not first.complete
    assert first.error is not None
    write(root / "web.yaml", "v1")
    wait_for(lambda: recorder.last_is({"web.yaml": b"v1"}))
    write(root / "db.yaml", "db")  # and it is watched from then on
    wait_for(lambda: recorder.last_is({"db.yaml": b"db", "web.yaml": b"v1"}))


def test_too_large_file_is_reported_then_recovers(root: Path, make_source: MakeSource) -> None:
    source, recorder = make_source(root, max_file_bytes=100)
    source.start()

    write(root / "web.yaml", b"x" * 101)
    wait_for(lambda: "web.yaml" in recorder.last.errors)
    assert recorder.last.errors["web.yaml"].startswith("too large")
    assert recorder.last.files["web.yaml"].data == b""

    write(root / "web.yaml", b"x" * 100)
    wait_for(lambda: recorder.last_is({"web.yaml": b"x" * 100}))
    assert recorder.last.errors == {}


def test_rescan_catches_a_change_no_event_reported(
    root: Path, tmp_path: Path, make_source: MakeSource
) -> None:
    target = tmp_path / "elsewhere" / "web.yaml"
    write(target, "v1")
    os.symlink(target, root / "web.yaml")
    source, recorder = make_source(root)
    source.start()

    write(target, "v2")  # outside the watched tree: inotify says nothing, as if dropped
    time.sleep(5 * DEBOUNCE)
    assert recorder.last_is({"web.yaml": b"v1"})

    source.rescan()
    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}))


def test_periodic_rescan_catches_a_change_no_event_reported(
    root: Path, tmp_path: Path, make_source: MakeSource
) -> None:
    target = tmp_path / "elsewhere" / "web.yaml"
    write(target, "v1")
    os.symlink(target, root / "web.yaml")
    source, recorder = make_source(root, rescan_interval=0.2)
    source.start()

    write(target, "v2")

    wait_for(lambda: recorder.last_is({"web.yaml": b"v2"}), timeout=2)


def test_failing_on_change_is_logged_and_offered_again(
    root: Path, make_source: MakeSource, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[dict[str, bytes]] = []

    def flaky(snapshot: Snapshot) -> None:
        calls.append(contents(snapshot))
        if len(calls) <= 2:
            raise RuntimeError("consumer bug")

    source, _ = make_source(root, on_change=flaky)
    with caplog.at_level(logging.ERROR, logger=directory.__name__):
        assert source.start().files == {}  # the initial delivery failed; start did not
        write(root / "web.yaml", "v1")
        wait_for(lambda: len(calls) == 2)  # delivered although the previous call raised

    source.rescan()  # same state, not yet taken: offered again
    wait_for(lambda: len(calls) == 3)
    write(root / "db.yaml", "db")
    wait_for(lambda: len(calls) == 4)

    assert calls == [
        {},
        {"web.yaml": b"v1"},
        {"web.yaml": b"v1"},
        {"db.yaml": b"db", "web.yaml": b"v1"},
    ]
    failures = [r for r in caplog.records if "on_change failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)


def test_stop_from_within_on_change(root: Path, make_source: MakeSource) -> None:
    holder: list[DirectorySource] = []
    calls: list[Snapshot] = []

    def stop_on_first_change(snapshot: Snapshot) -> None:
        calls.append(snapshot)
        if len(calls) == 2:
            holder[0].stop()

    source, _ = make_source(root, on_change=stop_on_first_change)
    holder.append(source)
    source.start()

    write(root / "web.yaml", "v1")
    wait_for(lambda: len(calls) == 2)
    write(root / "db.yaml", "db")
    time.sleep(5 * DEBOUNCE)

    assert len(calls) == 2
    source.stop()  # again, from outside: harmless


def test_a_source_starts_only_once(root: Path, make_source: MakeSource) -> None:
    source, _ = make_source(root)
    source.start()
    with pytest.raises(RuntimeError):
        source.start()
    source.stop()
    source.stop()


def test_scan_across_a_removal_is_incomplete_not_empty(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``rm -r`` empties the directory, our listing sees it empty, then rmdir removes it: that
    # empty listing is not "every manifest deleted".
    write(root / "web.yaml", "v1")
    real_walk = scanning._Walk.walk

    def walk_during_rm_r(self: scanning._Walk, path: str, prefix: str) -> None:
        (root / "web.yaml").unlink()
        real_walk(self, path, prefix)
        root.rmdir()

    monkeypatch.setattr(scanning._Walk, "walk", walk_during_rm_r)

    snapshot = scan(root)

    assert not snapshot.complete
    assert snapshot.files == {}


def test_stop_ends_every_thread_it_started(root: Path) -> None:
    before = set(threading.enumerate())
    source = DirectorySource(root, Recorder(), debounce=DEBOUNCE)
    source.start()
    assert set(threading.enumerate()) - before  # the worker and watchdog's threads

    source.stop()

    assert set(threading.enumerate()) - before == set()


def test_a_forced_rescan_delivers_an_unchanged_directory_again(
    root: Path, make_source: MakeSource
) -> None:
    # What the consumer makes of the same files may have changed (an approval in the
    # state): SIGHUP's rescan offers them again; the periodic one does not.
    write(root / "web.yaml", "v1")
    source, recorder = make_source(root)
    source.start()
    wait_for(lambda: len(recorder.snapshots) == 1)
    source.rescan()
    wait_for(lambda: len(recorder.snapshots) == 2)
    assert contents(recorder.snapshots[-1]) == {"web.yaml": b"v1"}
