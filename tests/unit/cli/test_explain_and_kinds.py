"""``kvmrec explain KIND[.FIELD...]`` and kind names taken in any case, everywhere."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "path", ["Domain.spec.disks", "domain.disks", "DOMAINS.spec.disks[]", "Domain.spec.disks[0]"]
)
def test_explain_a_field_shows_it_and_the_fields_under_it(
    capsys: pytest.CaptureFixture[str], path: str
) -> None:
    code, out, err = run(capsys, "explain", path)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "KIND: Domain"
    field = lines[lines.index("FIELD:") + 1]
    assert field.startswith("spec.disks <array>")
    below = [line for line in lines[lines.index("FIELDS:") + 1 :] if not line.startswith(" ")]
    assert below and all(line.startswith("spec.disks[].") for line in below)
    assert any(line.startswith("spec.disks[].deletionPolicy ") for line in below)
    assert not any(line.startswith(("spec.memory", "spec.interfaces")) for line in lines)


def test_explain_a_nested_field_of_array_items(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", "Domain.spec.disks.cloneFrom.disk")
    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index("FIELD:") + 1].startswith("spec.disks[].cloneFrom.disk <integer>")
    assert "FIELDS:" not in lines
    code, out, _ = run(capsys, "explain", "ovsbridge.ports.name")
    assert code == 0 and "spec.ports[].name <string> required" in out


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "Domain.spec.disks.nope",
            "Domain.spec.disks[] has no field 'nope' (fields there: path, pool, volume,",
        ),
        ("Domain.spec.memory.x", "Domain.spec.memory has no fields, so no 'x'"),
        ("Domain.nope", "Domain has no field 'nope' (fields there: apiVersion, kind, metadata,"),
        ("Network.spec.ip.dhcp.nope", "Network.spec.ip.dhcp has no field 'nope'"),
    ],
)
def test_explain_an_unknown_field_names_the_segment_and_what_exists(
    capsys: pytest.CaptureFixture[str], path: str, message: str
) -> None:
    code, out, err = run(capsys, "explain", path)
    assert code == 1
    assert out == ""
    assert message in err


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("domain/web-1", ObjectKey("Domain", "web-1")),
        ("DOMAIN/web-1", ObjectKey("Domain", "web-1")),
        ("domains/web-1", ObjectKey("Domain", "web-1")),
        ("ovsbridge/br0", ObjectKey("OvsBridge", "br0")),
        ("snapshotpolicy/nightly", ObjectKey("SnapshotPolicy", "nightly")),
        ("Network/lan", ObjectKey("Network", "lan")),
    ],
)
def test_object_keys_take_the_kind_in_any_case(text: str, key: ObjectKey) -> None:
    assert ObjectKey.parse(text) == key


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown kind 'Foo' \(known: Domain, Network,"):
        ObjectKey.parse("Foo/x")


@pytest.mark.parametrize(
    ("command", "shows"),
    [("status", '"name": "web-1"'), ("history", '"source": "web.yaml"'), ("events", "Started")],
)
def test_commands_taking_kind_name_take_it_in_any_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, shows: str
) -> None:
    state = tmp_path / "state.db"
    store = stores.open(state)
    now = datetime.now(UTC)
    try:
        store.apply(Manifest("Domain", "web-1", {"memory": "64Mi"}, "web.yaml", 1), now)
        store.add_event(ObjectKey("Domain", "web-1"), "Normal", "Started", "started", now)
    finally:
        store.close()
    code, out, err = run(capsys, command, "domain/web-1", "--state", str(state), "-o", "json")
    assert code in (0, 2), err  # status: 2, not reconciled yet
    assert shows in out
    code, _, err = run(capsys, command, "frob/web-1", "--state", str(state))
    assert code == 1
    assert "unknown kind 'frob'" in err
