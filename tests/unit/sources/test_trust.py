"""StrictModes for the manifest directory (sources/trust.py), on real files with real modes.

These tests run as root (as kvmrec does), so they can hand files to ``nobody`` (65534) to
make them "not owned by root or the service's user".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import ObjectKey
from kvmrec.engine.clock import FakeClock
from kvmrec.sources import trust
from kvmrec.sources.directory import DirectorySource
from kvmrec.sources.manifests import GUARD_SOURCE, ManifestSync
from kvmrec.sources.scanning import Snapshot, scan
from kvmrec.store.base import Store

NOBODY = 65534
HINT = "fix with chmod go-w, or run with --insecure-manifests"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to nobody needs root")


def doc(name: str) -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: 64Mi\n"
    )


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "manifests"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # whatever the umask
    return path


def checked(root: Path, expected: tuple[str, ...] = ()) -> Snapshot:
    return trust.enforce(scan(root), root, expected=expected)


# -- the verdict on one owner and mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("uid", "mode", "reason"),
    [
        (0, 0o100644, None),
        (0, 0o100600, None),
        (0, 0o040755, None),
        (0, 0o041755, None),  # the sticky bit does not make a directory writable
        (0, 0o100664, "writable by group (mode 0664)"),
        (0, 0o100646, "writable by others (mode 0646)"),
        (0, 0o100666, "writable by others (mode 0666)"),
        (0, 0o041777, "writable by others (mode 1777)"),
        (NOBODY, 0o100644, "owned by uid 65534 (nobody), not by root"),
    ],
)
def test_the_verdict_on_an_owner_and_a_mode(uid: int, mode: int, reason: str | None) -> None:
    found = trust.verdict(uid, mode, {0})
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason)
        assert found.endswith("or run with --insecure-manifests")


def test_the_service_user_is_trusted_as_root_is() -> None:
    assert trust.verdict(NOBODY, 0o100644, {0, NOBODY}) is None
    assert trust.trusted_owners() == {0, os.geteuid()}
    found = trust.verdict(1234, 0o100644, {0, NOBODY})
    assert found is not None and "not by root or uid 65534 (nobody)" in found


# -- files ------------------------------------------------------------------------------------


def test_a_safe_directory_passes_untouched(root: Path) -> None:
    write(root / "web.yaml", doc("web"))
    write(root / "team" / "db.yaml", doc("db"))
    snapshot = scan(root)
    assert trust.enforce(snapshot, root) is snapshot


def test_a_world_writable_file_is_refused_with_the_fix_and_the_others_are_kept(
    root: Path,
) -> None:
    write(root / "good.yaml", doc("good"))
    write(root / "web.yaml", doc("web"), 0o666)
    snapshot = checked(root)
    assert snapshot.complete
    assert snapshot.errors == {"web.yaml": f"writable by others (mode 0666); {HINT}"}
    assert snapshot.files["web.yaml"].data == b""  # held, as an unreadable file is
    assert snapshot.files["good.yaml"].data == doc("good").encode()


def test_a_group_writable_file_is_refused(root: Path) -> None:
    write(root / "web.yaml", doc("web"), 0o664)
    assert checked(root).errors["web.yaml"] == f"writable by group (mode 0664); {HINT}"


def test_a_file_not_owned_by_root_is_refused(root: Path) -> None:
    os.chown(write(root / "web.yaml", doc("web")), NOBODY, NOBODY)
    reason = checked(root).errors["web.yaml"]
    assert reason.startswith("owned by uid 65534 (nobody), not by root; fix with chown")


def test_the_file_judged_is_the_one_that_was_read(root: Path) -> None:
    """The owner and mode come from the descriptor the bytes were read through."""
    path = write(root / "web.yaml", doc("web"), 0o666)
    snapshot = scan(root)
    path.chmod(0o644)  # too late: what was read was world-writable when it was read
    assert "web.yaml" in trust.enforce(snapshot, root).errors


# -- directories ------------------------------------------------------------------------------


def test_a_world_writable_subdirectory_refuses_the_files_below_it(root: Path) -> None:
    write(root / "top.yaml", doc("top"))
    write(root / "team" / "deep" / "db.yaml", doc("db"))
    (root / "team").chmod(0o777)
    snapshot = checked(root)
    assert snapshot.complete
    assert snapshot.errors == {
        "team/deep/db.yaml": f"directory team: writable by others (mode 0777); {HINT}"
    }
    assert snapshot.files["top.yaml"].data


def test_a_subdirectory_owned_by_someone_else_refuses_the_files_below_it(root: Path) -> None:
    write(root / "team" / "db.yaml", doc("db"))
    os.chown(root / "team", NOBODY, NOBODY)
    assert checked(root).errors["team/db.yaml"].startswith("directory team: owned by uid 65534")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_an_unsafe_manifest_directory_makes_the_snapshot_incomplete(root: Path, mode: int) -> None:
    write(root / "web.yaml", doc("web"))
    root.chmod(mode)
    snapshot = checked(root)
    assert not snapshot.complete and not snapshot.files
    assert snapshot.error is not None
    assert snapshot.error.startswith(f"manifest directory {root}: writable by")
    assert f"(mode {mode:04o}); {HINT}" in snapshot.error


def test_a_manifest_directory_owned_by_someone_else_makes_the_snapshot_incomplete(
    root: Path,
) -> None:
    write(root / "web.yaml", doc("web"))
    os.chown(root, NOBODY, NOBODY)
    snapshot = checked(root)
    assert not snapshot.complete
    assert snapshot.error is not None and "owned by uid 65534 (nobody)" in snapshot.error


def test_the_manifest_directory_is_judged_through_its_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    write(real / "web.yaml", doc("web"))
    link = tmp_path / "manifests"
    link.symlink_to(real)
    real.chmod(0o755)
    assert checked(link).errors == {}
    real.chmod(0o777)
    assert not checked(link).complete


# -- symlinks: ConfigMaps and links out of the directory ------------------------------------


def configmap(root: Path, mode: int) -> None:
    """A Kubernetes ConfigMap volume: files are links through ``..data`` to a timestamped
    directory, swapped atomically on update."""
    data = root / "..2024_01_01_00_00_00.000000001"
    write(data / "web.yaml", doc("web"))
    data.chmod(mode)
    (root / "..data").symlink_to(data.name)
    (root / "web.yaml").symlink_to("..data/web.yaml")


def test_a_configmap_volume_is_read_through_its_data_directory(root: Path) -> None:
    configmap(root, 0o755)
    snapshot = checked(root)
    assert snapshot.errors == {} and snapshot.files["web.yaml"].data == doc("web").encode()


def test_a_configmap_whose_data_directory_others_can_write_is_refused(root: Path) -> None:
    configmap(root, 0o777)
    assert checked(root).errors == {
        "web.yaml": (
            f"directory ..2024_01_01_00_00_00.000000001: writable by others (mode 0777); {HINT}"
        )
    }


def test_a_symlink_out_of_the_directory_is_judged_with_every_directory_of_its_target(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "team"
    write(outside / "web.yaml", doc("web"))
    outside.chmod(0o755)
    (tmp_path / "elsewhere").chmod(0o755)
    # Relative, so the way there does not pass through /tmp, above the test's directory.
    (root / "web.yaml").symlink_to("../elsewhere/team/web.yaml")
    assert checked(root).errors == {}

    (tmp_path / "elsewhere").chmod(0o777)  # whoever can write here can replace team/
    assert checked(root).errors == {
        "web.yaml": f"directory {tmp_path / 'elsewhere'}: writable by others (mode 0777); {HINT}"
    }


def test_a_link_to_a_file_of_someone_else_is_refused(root: Path, tmp_path: Path) -> None:
    target = write(tmp_path / "theirs.yaml", doc("web"))
    os.chown(target, NOBODY, NOBODY)
    (root / "web.yaml").symlink_to(f"../{target.name}")
    assert checked(root).errors["web.yaml"].startswith("owned by uid 65534 (nobody)")


def test_a_link_into_a_sticky_world_writable_directory_is_refused(root: Path) -> None:
    # As sshd: /tmp lets anyone create names in it, so nothing reached through it counts.
    (root / "web.yaml").symlink_to("/tmp/kvmrec-test-never-there.yaml")
    write(Path("/tmp/kvmrec-test-never-there.yaml"), doc("web"))
    try:
        reason = checked(root).errors["web.yaml"]
    finally:
        os.unlink("/tmp/kvmrec-test-never-there.yaml")
    assert reason.startswith("directory /tmp: writable by others (mode 1777)")


# -- absences that cannot be trusted ----------------------------------------------------------


def test_a_file_gone_from_a_directory_others_can_write_is_held_not_deleted(root: Path) -> None:
    write(root / "team" / "keep.yaml", doc("keep"))
    (root / "team").chmod(0o777)
    snapshot = checked(root, expected=("team/gone.yaml", "gone.yaml"))
    assert snapshot.files["team/gone.yaml"].data == b""
    assert snapshot.errors["team/gone.yaml"].startswith(
        "missing, but its absence cannot be trusted"
    )
    assert "directory team: writable by others (mode 0777)" in snapshot.errors["team/gone.yaml"]
    # Gone from the trusted top directory: a real removal.
    assert "gone.yaml" not in snapshot.files and "gone.yaml" not in snapshot.errors


def test_a_whole_subdirectory_removed_is_a_real_removal(root: Path) -> None:
    (root / "team").mkdir()
    assert "team/gone.yaml" not in checked(root, expected=("team/gone.yaml",)).files
    (root / "team").rmdir()
    assert "team/gone.yaml" not in checked(root, expected=("team/gone.yaml",)).files


# -- what the store makes of it ---------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = stores.open(tmp_path / "state.db")
    yield s
    s.close()


def test_a_refused_file_keeps_its_last_good_state_and_is_reported(root: Path, store: Store) -> None:
    sync = ManifestSync(store, FakeClock())
    write(root / "web.yaml", doc("web"))
    write(root / "team" / "db.yaml", doc("db"))
    sync.apply(checked(root))
    assert {obj.key.name for obj in store.list()} == {"web", "db"}

    write(root / "web.yaml", doc("web").replace("64Mi", "128Mi"), 0o666)  # not applied
    (root / "team" / "db.yaml").unlink()  # not a deletion: team is world-writable
    (root / "team").chmod(0o777)
    expected = tuple(obj.source for obj in store.list())
    result = sync.apply(checked(root, expected))
    assert not result.changed and not result.deleting
    web = store.get(ObjectKey("Domain", "web"))
    assert web is not None and web.spec["memory"] == "64Mi" and not web.deleting
    assert result.errors["web.yaml"] == f"writable by others (mode 0666); {HINT}"
    assert "directory team" in result.errors["team/db.yaml"]

    root.chmod(0o777)  # the whole directory: nothing applied, nothing deleted
    result = sync.apply(checked(root, expected))
    assert not result.changed and not result.deleting
    assert "writable by others (mode 0777)" in result.errors[GUARD_SOURCE]

    root.chmod(0o755)
    (root / "team").chmod(0o755)
    (root / "web.yaml").chmod(0o644)
    result = sync.apply(checked(root, expected))
    assert result.changed == [ObjectKey("Domain", "web")]
    assert result.deleting == [ObjectKey("Domain", "db")]  # now a trusted removal
    assert result.errors == {}


# -- the directory source ---------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def test_a_chmod_alone_is_news_to_the_source(root: Path) -> None:
    """Only the verdict changes, not a byte: the vetted snapshot must still be delivered."""
    path = write(root / "web.yaml", doc("web"), 0o666)
    delivered: list[Snapshot] = []
    source = DirectorySource(
        root,
        delivered.append,
        debounce=0.05,
        vet=lambda s: trust.enforce(s, root),
    )
    try:
        first = source.start()
        assert "web.yaml" in first.errors
        path.chmod(0o644)
        wait_for(lambda: bool(delivered) and not delivered[-1].errors)
        assert delivered[-1].files["web.yaml"].data == doc("web").encode()
        path.chmod(0o646)
        wait_for(lambda: "web.yaml" in delivered[-1].errors)
    finally:
        source.stop()
