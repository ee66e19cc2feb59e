"""Parsing manifest files into accepted documents, or into problems that name their place.

A file may hold several YAML documents (``---``). Each is checked in turn: that it is a
mapping, its ``apiVersion`` and ``kind``, then the kind's schema (``crds/``), then the defaults
(a Domain's osVariant's, api/osinfo.py, before the schema's), then the rules a schema
cannot say (``api/rules.py``: quantities, duplicate names). YAML is composed into
nodes first so every problem can carry the line of the field it is about.

A file is accepted whole or not at all: if any document has a problem, ``parse_file``
raises ``ManifestError`` with all of them, and the caller keeps the file's last good state.

The YAML itself is loaded by ``api/yaml_loading.py``, within bounds no file can make kvmrec
exceed (documents, nodes with aliases expanded, depth).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from kvmrec.api import osinfo, rules, schema
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import Manifest, spec_digest
from kvmrec.api.yaml_loading import Path, _DuplicateKey, _load, _Refused


def parse_file(source: str, data: bytes) -> list[Manifest]:
    """Every document of one manifest file, validated and defaulted."""
    try:
        return _parse_file(source, data)
    except RecursionError:
        # Deep nesting or a recursive alias (``&a [*a]``): a problem of the file, not a
        # crash of the caller (which would otherwise stop taking every other file too).
        raise ManifestError(
            [ManifestProblem(source, "nested too deeply (or a recursive YAML alias)")]
        ) from None


def _parse_file(source: str, data: bytes) -> list[Manifest]:
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
        at, reason = _yaml_problem(exc)
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
    except _Refused as exc:
        raise ManifestError(
            [ManifestProblem(source, exc.reason, document=exc.document, line=exc.line)]
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


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """The line where a YAML error starts, and what is wrong.

    PyYAML marks two places: the construct it was reading (the context: an unclosed ``[``,
    an unterminated string) and where it gave up (the problem), often lines later or at the
    end of the file. The operator has to fix the construct, so its line comes first; the
    problem's line follows in the reason when it is another one."""
    context = exc.context_mark.line + 1 if exc.context_mark else None
    problem = exc.problem_mark.line + 1 if exc.problem_mark else None
    what = str(exc.problem) if exc.problem else "invalid YAML"
    if exc.context:
        what = f"{exc.context}: {what}"
    if context is not None and problem is not None and problem != context:
        what = f"{what} on line {problem}"
    return (context or problem), what


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
    full = schema.with_defaults(kind, _with_os_defaults(kind_name, document))
    spec = full["spec"]
    found = [
        problem(f, r, path, label)
        for f, r, path in rules.semantic_problems(kind_name, full["metadata"]["name"], spec)
    ]
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
        digest=spec_digest(document["spec"]),
    )


def _with_os_defaults(kind: str, document: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Domain's ``osVariant`` defaults the fields its manifest leaves open, before the
    schema's own defaults fill the rest (an unknown variant is the rules' error)."""
    spec = document.get("spec")
    variant = spec.get("osVariant") if kind == "Domain" and isinstance(spec, dict) else None
    info = osinfo.database().get(variant) if isinstance(variant, str) else None
    if info is None:
        return document
    copied = copy.deepcopy(dict(document))
    osinfo.fill_defaults(copied["spec"], info)
    return copied


def _nearest(path: Path, lines: Mapping[Path, int]) -> Path:
    """The longest prefix of ``path`` that has a known line."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return path[:end]
    return ()
