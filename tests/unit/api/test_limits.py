"""Bounded work for any file: size, documents, nodes, depth, and YAML alias bombs.

kvmrec parses whatever lands in its directory, as root, in the process that converges the
host. Each limit is refused with the file and the line, quickly; input within the limits
(aliases used modestly included) is accepted as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmrec.api import yaml_loading
from kvmrec.api.errors import ManifestError
from kvmrec.api.manifests import parse_file
from kvmrec.api.yaml_loading import MAX_DEPTH, MAX_DOCUMENTS, MAX_NODES
from kvmrec.cli.main import main
from kvmrec.sources.directory import DEFAULT_MAX_FILE_BYTES, scan

HEAD = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\nspec:\n"


def domain(name: str, body: str = "  memory: 64Mi\n") -> str:
    return HEAD.format(name=name) + body


def refused(data: str | bytes) -> tuple[str, float]:
    """The one problem of a refused file as ``validate`` prints it, and the time it took."""
    raw = data.encode() if isinstance(data, str) else data
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        parse_file("bomb.yaml", raw)
    elapsed = time.monotonic() - started
    [problem] = caught.value.problems
    return str(problem), elapsed


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """The classic: each anchor a list of ``width`` aliases of the one before."""
    lines = ['  lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        aliases = ", ".join([f"*lol{i - 1}"] * width)
        lines.append(f"  lol{i}: &lol{i} [{aliases}]")
    return domain("bomb", "  memory: 64Mi\n" + "\n".join(lines) + "\n")


# -- alias bombs ------------------------------------------------------------------------------


def test_a_billion_laughs_is_refused_fast_at_the_alias_that_crosses_the_limit() -> None:
    message, elapsed = refused(billion_laughs())
    assert elapsed < 0.5
    # lol4 is 11,111 nodes: the aliases of it in lol5 (line 12) go past 100,000.
    assert message.startswith("bomb.yaml: line 12: document 1: alias *lol4 expands the document")
    assert f"more than {MAX_NODES} YAML nodes" in message and "billion laughs" in message


def test_a_bomb_of_mappings_and_merge_keys_is_refused_too() -> None:
    lines = ["  m0: &m0 {a: 1, b: 2, c: 3}"]
    for i in range(1, 12):
        lines.append(f"  m{i}: &m{i} {{x: *m{i - 1}, y: *m{i - 1}, z: *m{i - 1}, w: *m{i - 1}}}")
    lines.append("  merged: {<<: *m11}")
    message, elapsed = refused(domain("maps", "\n".join(lines) + "\n"))
    assert elapsed < 0.5 and "expands the document" in message


def test_a_wide_bomb_in_one_line_names_that_line() -> None:
    text = domain("wide", "  memory: 64Mi\n  a: &a [" + ",".join(["x"] * 1000) + "]\n")
    text += "  b: [" + ",".join(["*a"] * 200) + "]\n"
    message, _ = refused(text)
    assert message.startswith("bomb.yaml: line 8: document 1: alias *a expands the document")


def test_a_recursive_alias_is_refused() -> None:
    for body in ("  a: &a [1, *a]\n", "  a: &a {b: {c: *a}}\n"):
        message, elapsed = refused(domain("loop", body))
        assert elapsed < 0.5
        assert message == (
            "bomb.yaml: line 6: document 1: alias *a refers to a node that contains it "
            "(a recursive structure)"
        )


def test_aliases_used_modestly_are_accepted() -> None:
    text = domain(
        "web",
        "  memory: 64Mi\n"
        "  interfaces:\n"
        "    - &lan {name: lan, network: &net default, model: virtio}\n"
        "    - {<<: *lan, name: lan2}\n"
        "    - {name: lan3, network: *net}\n",
    )
    [manifest] = parse_file("web.yaml", text.encode())
    names = [(i["name"], i["network"]) for i in manifest.spec["interfaces"]]
    assert names == [("lan", "default"), ("lan2", "default"), ("lan3", "default")]


def test_one_anchor_aliased_right_up_to_the_limit_is_still_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yaml_loading, "MAX_NODES", 60)
    # The document's nodes: 1 root mapping + 3 pairs (6) + spec mapping + 2 pairs (4), ...
    spec = "  memory: 64Mi\n  os: {boot: &b [hd, cdrom]}\n"
    text = domain("edge", spec)
    parse_file("edge.yaml", text.encode())  # far below the limit
    # Each alias of the 3-node list adds 3.
    fits = text.replace("[hd, cdrom]}", "[hd, cdrom]}\n  x: [" + ",".join(["*b"] * 10) + "]")
    with pytest.raises(ManifestError, match="unknown field"):
        parse_file("edge.yaml", fits.encode())  # counted, under the limit, then validated
    over = text.replace("[hd, cdrom]}", "[hd, cdrom]}\n  x: [" + ",".join(["*b"] * 20) + "]")
    with pytest.raises(ManifestError, match=r"alias \*b expands the document"):
        parse_file("edge.yaml", over.encode())


# -- nodes, depth, documents ------------------------------------------------------------------


def test_too_many_nodes_without_any_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller limit, for speed: PyYAML's pure-Python scanner takes seconds over 100,000.
    monkeypatch.setattr(yaml_loading, "MAX_NODES", 5000)
    text = domain("big", "  memory: 64Mi\n  x:\n" + "    - 0\n" * 5000)
    message, _ = refused(text)
    assert message.startswith("bomb.yaml: line ")
    assert message.endswith("document 1: more than 5000 YAML nodes in one document")
    line = int(message.split("line ")[1].split(":")[0])
    assert 4990 < line < 5000  # where it went over: 11 nodes before the list, 2 lines fewer


def test_the_real_node_limit_is_far_above_a_big_real_manifest() -> None:
    hosts = "".join(
        f"        - {{mac: '52:54:00:00:{i // 256:02x}:{i % 256:02x}', "
        f"ip: 10.0.{i // 250}.{i % 250 + 2}, name: h{i}}}\n"
        for i in range(1000)
    )
    text = (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Network\nmetadata: {name: lan}\nspec:\n"
        "  forward: nat\n  ip:\n    address: 10.0.0.1\n    prefix: 16\n    dhcp:\n"
        "      start: 10.0.200.1\n      end: 10.0.200.254\n      hosts:\n" + hosts
    )
    [network] = parse_file("lan.yaml", text.encode())
    assert len(network.spec["ip"]["dhcp"]["hosts"]) == 1000  # about 7,000 nodes


@pytest.mark.parametrize(
    "wrap",
    [
        lambda deep: deep,  # the document itself
        lambda deep: domain("d", f"  memory: 64Mi\n  x: {deep}\n"),
        lambda deep: domain("d", f"  memory: 64Mi\n  disks: [{{path: /x, size: {deep}}}]\n"),
        lambda deep: HEAD.replace("  name: {name}", f"  name: d\n  labels: {{a: {deep}}}"),
        lambda deep: HEAD.replace("  name: {name}", f"  name: d\n  annotations: {{a: {deep}}}"),
    ],
)
def test_depth_is_bounded_and_everything_below_it_parses_to_a_problem_not_a_crash(
    wrap: Callable[[str], str],
) -> None:
    # Just under the limit: every later stage (construction, line index, schema, defaults)
    # copes; the manifest is wrong, and says so.
    shallow = wrap("[" * (MAX_DEPTH - 10) + "]" * (MAX_DEPTH - 10))
    with pytest.raises(ManifestError):
        parse_file("deep.yaml", shallow.encode())
    deep = wrap("[" * 5000 + "]" * 5000)
    message, elapsed = refused(deep)
    assert elapsed < 2
    assert message.endswith(f"nested more than {MAX_DEPTH} levels deep")


def test_too_many_documents_names_the_first_one_over() -> None:
    text = "---\n" + "---\n".join(domain(f"d{i}") for i in range(MAX_DOCUMENTS + 1))
    message, _ = refused(text)
    line = 1 + MAX_DOCUMENTS * 7  # 6 lines a document, and its ---
    assert message == (
        f"bomb.yaml: line {line}: document {MAX_DOCUMENTS + 1}: "
        f"more than {MAX_DOCUMENTS} documents in one file (split it into several)"
    )


def test_a_file_of_nothing_but_document_markers_is_cheap() -> None:
    started = time.monotonic()
    with pytest.raises(ManifestError, match="more than 1000 documents"):
        parse_file("empty.yaml", b"---\n" * 250_000)  # 1 MB of empty documents
    assert time.monotonic() - started < 1


def test_as_many_documents_as_allowed_are_accepted() -> None:
    text = "---\n".join(domain(f"d{i}") for i in range(MAX_DOCUMENTS))
    assert len(parse_file("many.yaml", text.encode())) == MAX_DOCUMENTS


# -- the file size ----------------------------------------------------------------------------


def test_a_file_over_one_mebibyte_is_not_read_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"#" * (DEFAULT_MAX_FILE_BYTES + 1))
    (tmp_path / "edge.yaml").write_bytes(b"#" * DEFAULT_MAX_FILE_BYTES)
    snapshot = scan(tmp_path)
    assert snapshot.errors == {
        "big.yaml": (
            "too large: 1048577 bytes, over the limit of 1048576 bytes (1 MiB) for one "
            "manifest file; not read (split it into several files)"
        )
    }
    assert snapshot.files["big.yaml"].data == b""
    assert len(snapshot.files["edge.yaml"].data) == DEFAULT_MAX_FILE_BYTES


def test_validate_refuses_a_single_file_over_the_limit_without_reading_it_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (DEFAULT_MAX_FILE_BYTES + 1))
    assert main(["validate", str(big)]) == 2
    assert f"{big}: too large: over the 1 MiB limit" in capsys.readouterr().out


def test_validate_names_the_line_of_an_alias_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bomb.yaml").write_text(billion_laughs())
    (tmp_path / "bomb.yaml").chmod(0o644)
    tmp_path.chmod(0o755)
    assert main(["validate", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f"{tmp_path}/bomb.yaml: line 12: document 1: alias *lol4 expands" in out
