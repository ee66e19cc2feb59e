"""Parsing manifest files into accepted documents, or into problems that name their place.

A file may hold several YAML documents (``---``). Each is checked in turn: that it is a
mapping, its ``apiVersion`` and ``kind``, then the kind's schema (``crds/``), then rules a
schema cannot say (quantities, duplicate names). YAML is composed into nodes first so every
problem can carry the line of the field it is about, and duplicate keys (which PyYAML would
silently collapse) are errors.

A file is accepted whole or not at all: if any document has a problem, ``parse_file``
raises ``ManifestError`` with all of them, and the caller keeps the file's last good state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from kvmrec.api import quantities, schema
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import Manifest

MIN_MEMORY = 1024 * 1024
Path = tuple[str | int, ...]


def parse_file(source: str, data: bytes) -> list[Manifest]:
    """Every document of one manifest file, validated and defaulted."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(
            [ManifestProblem(source, f"not UTF-8 text ({exc.reason})", line=line)]
        ) from None
    try:
        documents = _load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at: int | None = mark.line + 1 if mark else None
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ManifestError([ManifestProblem(source, f"invalid YAML: {reason}", line=at)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([ManifestProblem(source, f"invalid YAML: {exc}")]) from None
    except _DuplicateKey as exc:
        raise ManifestError(
            [
                ManifestProblem(
                    source,
                    f"duplicate key {exc.key!r}",
                    document=exc.document,
                    field=schema.format_path(exc.path),
                    line=exc.line,
                )
            ]
        ) from None

    manifests: list[Manifest] = []
    problems: list[ManifestProblem] = []
    seen: dict[tuple[str, str], int] = {}
    for index, (document, lines) in enumerate(documents, start=1):
        if document is None:
            continue  # an empty document, e.g. a trailing '---'
        found = _check_document(source, index, document, lines)
        if isinstance(found, Manifest):
            first = seen.setdefault((found.kind, found.name), index)
            if first != index:
                problems.append(
                    ManifestProblem(
                        source,
                        f"{found.kind}/{found.name} is already defined in document {first}",
                        document=index,
                        field="metadata.name",
                        line=lines.get(("metadata", "name")),
                    )
                )
            manifests.append(found)
        else:
            problems.extend(found)
    if problems:
        raise ManifestError(problems)
    return manifests


def _check_document(
    source: str, index: int, document: Any, lines: Mapping[Path, int]
) -> Manifest | list[ManifestProblem]:
    def problem(
        field: str | None, reason: str, path: Path = (), obj: str | None = None
    ) -> ManifestProblem:
        return ManifestProblem(
            source,
            reason,
            document=index,
            field=field,
            line=lines.get(_nearest(path, lines)),
            object=obj,
        )

    if not isinstance(document, dict):
        return [problem(None, f"a manifest must be a mapping, not {type(document).__name__}")]
    api_version = document.get("apiVersion")
    kind_name = document.get("kind")
    if api_version != schema.API_VERSION:
        return [
            problem(
                "apiVersion", f"must be {schema.API_VERSION} (got {api_version!r})", ("apiVersion",)
            )
        ]
    kinds = schema.registry()
    if not isinstance(kind_name, str) or kind_name not in kinds:
        known = ", ".join(sorted(kinds))
        return [problem("kind", f"unknown kind {kind_name!r} (known: {known})", ("kind",))]
    kind = kinds[kind_name]
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"{kind_name}/{name}" if isinstance(name, str) else None

    found = [
        problem(p.field, p.reason, _nearest(p.path, lines), label)
        for p in schema.validate(kind, document)
    ]
    if found:
        return found
    full = schema.with_defaults(kind, document)
    spec = full["spec"]
    found = [problem(f, r, path, label) for f, r, path in _semantic_problems(kind_name, spec)]
    if found:
        return found
    metadata = full["metadata"]
    return Manifest(
        kind=kind_name,
        name=metadata["name"],
        spec=spec,
        source=source,
        document=index,
        labels=dict(metadata.get("labels", {})),
        annotations=dict(metadata.get("annotations", {})),
    )


def _semantic_problems(kind: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    """Rules the schema cannot express."""
    problems: list[tuple[str, str, Path]] = []
    if kind == "Domain":
        try:
            memory = quantities.parse_bytes(spec["memory"])
            if memory < MIN_MEMORY:
                problems.append(
                    ("spec.memory", f"{spec['memory']!r} is below 1Mi", ("spec", "memory"))
                )
        except ValueError as exc:
            problems.append(("spec.memory", str(exc), ("spec", "memory")))
        paths: dict[str, int] = {}
        for i, disk in enumerate(spec.get("disks", [])):
            first = paths.setdefault(disk["path"], i)
            if first != i:
                problems.append(
                    (
                        f"spec.disks[{i}].path",
                        f"{disk['path']!r} is already used by spec.disks[{first}]",
                        ("spec", "disks", i, "path"),
                    )
                )
            if ".." in disk["path"].split("/"):
                problems.append(
                    (f"spec.disks[{i}].path", "must not contain '..'", ("spec", "disks", i, "path"))
                )
    return problems


def _nearest(path: Path, lines: Mapping[Path, int]) -> Path:
    """The longest prefix of ``path`` that has a known line."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return path[:end]
    return ()


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, path: Path) -> None:
        super().__init__(key)
        self.key = key
        self.line = line
        self.path = path
        self.document: int | None = None


def _load(text: str) -> list[tuple[Any, dict[Path, int]]]:
    """Documents of ``text`` with a map from field path to 1-based line."""
    loader = yaml.SafeLoader(text)
    try:
        documents: list[tuple[Any, dict[Path, int]]] = []
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[Path, int] = {}
            try:
                _index_lines(node, (), lines)
            except _DuplicateKey as exc:
                exc.document = len(documents) + 1
                raise
            documents.append((loader.construct_document(node), lines))
        return documents
    finally:
        loader.dispose()


def _index_lines(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen and key != "<<":
                raise _DuplicateKey(key, key_node.start_mark.line + 1, (*path, key))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines)
