"""``kvmrec validate``'s summary: files, objects and problems counted as the service takes
the files (a file is applied whole or not at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmrec.cli.main import main


def doc(name: str, memory: str = "64Mi", extra: str = "") -> str:
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
        f"metadata:\n  name: {name}\nspec:\n  memory: {memory}\n{extra}"
    )


def validate(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, list[str]]:
    code = main(["validate", *map(str, paths)])
    return code, capsys.readouterr().out.strip().splitlines()


def test_several_files_with_several_documents_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "good.yaml").write_text("---\n".join([doc("a"), doc("b"), doc("c")]))
    # Two bad documents of three: two problems, and none of its objects is valid.
    (folder / "bad.yaml").write_text(
        "---\n".join([doc("d"), doc("e", "lots"), doc("f", extra="  bogus: 1\n")])
    )
    (folder / "yaml.yaml").write_text(doc("g", extra="  vcpus: [1\n"))
    # Redefines good.yaml's a: the whole file is refused, so its h is not valid either.
    (folder / "taken.yaml").write_text(doc("a") + "---\n" + doc("h"))
    single = tmp_path / "single.yaml"
    single.write_text(doc("i") + "---\n" + doc("j"))
    code, out = validate(capsys, folder, single, tmp_path / "missing.yaml")
    assert code == 2
    problems = out[:-1]
    assert len(problems) == 5
    assert sum("bad.yaml" in p for p in problems) == 2
    assert sum("yaml.yaml: line" in p for p in problems) == 1
    assert any("taken.yaml: document 1: Domain/a is already defined in" in p for p in problems)
    assert problems[-1].endswith("missing.yaml: no such file or directory")
    assert out[-1] == "5 file(s) (3 invalid), 5 valid object(s), 5 problem(s)"


def test_a_valid_set_counts_every_file_and_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "one.yaml").write_text(doc("a") + "---\n" + doc("b") + "---\n")
    (tmp_path / "two.yaml").write_text(doc("c"))
    code, out = validate(capsys, tmp_path / "one.yaml", tmp_path / "two.yaml")
    assert (code, out) == (0, ["2 file(s), 3 object(s), valid"])


def test_a_file_named_twice_is_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one.yaml").write_text(doc("a"))
    code, out = validate(capsys, tmp_path, tmp_path / "one.yaml")
    assert (code, out) == (0, ["1 file(s), 1 object(s), valid"])
