"""Kinds and their schemas, loaded from the CRD files in ``crds/``.

Each ``crds/*.yaml`` is a CustomResourceDefinition-style document whose
``openAPIV3Schema`` is the one source of truth for a kind: validation here, defaults,
and ``kvmrec explain``. Validation is JSON Schema (draft 7) with every object closed
(``additionalProperties: false``), so a misspelt field is an error instead of being dropped.
Errors are turned into ``ManifestProblem``s whose field is a dotted path
(``spec.disks[0].path``) and whose reason an operator can act on.

The kinds' names are read without the validator: ``KIND/NAME`` on the command line of a
read-only command (``kvmrec status domain/web-1``) needs the names alone, and jsonschema
is the largest import of the package, so a kind's validator is built when first used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

GROUP = "kvmrec.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class KindSchema:
    """One kind: its name, where its CRD lives, and a validator for its schema."""

    kind: str
    plural: str
    source: Path
    schema: Mapping[str, Any]
    _built: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def validator(self) -> jsonschema.protocols.Validator:
        """The schema's validator, built (and the schema checked) on first use."""
        if "validator" not in self._built:
            import jsonschema  # the slowest import of all: only where validating

            jsonschema.Draft7Validator.check_schema(self.schema)
            self._built["validator"] = jsonschema.Draft7Validator(self.schema)
        validator: jsonschema.protocols.Validator = self._built["validator"]
        return validator

    def accepts(self, document: Mapping[str, Any]) -> bool:
        """Whether ``document`` is valid, by the schema compiled to Python code on first use
        (fastjsonschema, some thirty times faster than the validator): the common case of
        a valid manifest needs no more, not even jsonschema's import (a tenth of a second
        at start-up). It only ever says yes to what the validator accepts too
        (tests/unit/api/test_schema_fast_check.py); anything else goes to the validator,
        whose errors are the ones reported, and which checks the schema itself first
        (the CRDs of the source tree are checked by tests/unit/api/test_crds.py)."""
        check = self._built.get("check")
        if check is None:
            import fastjsonschema

            # No defaults filled in (the document stays as written) and no formats, as
            # the validator has none. The check says only yes or no, so its exceptions
            # carry no details: the generated code is a quarter of the size and compiles
            # in 25 ms instead of 80 (Domain), at every start of the service.
            check = fastjsonschema.compile(
                dict(self.schema),
                use_default=False,
                use_formats=False,
                detailed_exceptions=False,
            )
            self._built["check"] = check
            self._built["refused"] = fastjsonschema.JsonSchemaException
        try:
            check(document)
        except self._built["refused"]:
            return False
        return True


@dataclass(frozen=True)
class SchemaProblem:
    """One validation failure: the dotted field path and why it failed."""

    field: str
    reason: str
    path: tuple[str | int, ...]


def crds_dir() -> Path:
    """Where the CRDs are: $KVMREC_CRDS, else ``crds/`` of the source tree."""
    env = os.environ.get("KVMREC_CRDS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "crds"


@functools.cache
def registry() -> Mapping[str, KindSchema]:
    """Every known kind by name, loaded once from ``crds_dir()``."""
    import yaml  # not for a command that names no kind

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    kinds: dict[str, KindSchema] = {}
    directory = crds_dir()
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise FileNotFoundError(f"no CRD files in {directory}")
    for path in files:
        crd = yaml.load(path.read_text(), Loader=loader)
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v["name"] == VERSION)
        kind = spec["names"]["kind"]
        kinds[kind] = KindSchema(
            kind=kind,
            plural=spec["names"]["plural"],
            source=path,
            schema=version["schema"]["openAPIV3Schema"],
        )
    return kinds


def format_path(path: Sequence[str | int]) -> str:
    """``('spec', 'disks', 0, 'path')`` -> ``spec.disks[0].path``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


def validate(kind: KindSchema, document: Mapping[str, Any]) -> list[SchemaProblem]:
    """Every problem with ``document`` against the kind's schema, in document order."""
    if kind.accepts(document):
        return []
    problems = [_explain(error) for error in kind.validator.iter_errors(document)]
    return sorted(problems, key=lambda p: format_path(p.path))


def _explain(error: jsonschema.ValidationError) -> SchemaProblem:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    instance = error.instance
    value: Any = error.validator_value
    match error.validator:
        case "additionalProperties" if isinstance(instance, Mapping):
            known = set(schema.get("properties", {}))
            extra = sorted(str(k) for k in instance if k not in known)
            field_path = (*path, extra[0]) if extra else path
            names = ", ".join(extra)
            allowed = ", ".join(sorted(known))
            return SchemaProblem(
                format_path(field_path), f"unknown field {names} (allowed: {allowed})", field_path
            )
        case "required":
            missing = str(value[0]) if value else "?"
            for name in value:
                if isinstance(instance, Mapping) and name not in instance:
                    missing = str(name)
                    break
            return SchemaProblem(format_path((*path, missing)), "is required", (*path, missing))
        case "enum":
            options = ", ".join(str(v) for v in value)
            return SchemaProblem(
                format_path(path), f"must be one of {options} (got {instance!r})", path
            )
        case "type":
            wanted_text = " or ".join(value) if isinstance(value, list) else str(value)
            return SchemaProblem(
                format_path(path),
                f"must be {wanted_text} (got {_type_name(instance)} {instance!r})",
                path,
            )
        case "pattern":
            # A CRD may say in words what its pattern means (x-kvmrec-pattern-message).
            meaning = schema.get("x-kvmrec-pattern-message")
            reason = (
                f"{instance!r} {meaning}" if meaning else (f"{instance!r} does not match {value}")
            )
            return SchemaProblem(format_path(path), reason, path)
        case "minimum" | "maximum" | "minItems" | "maxItems" | "minLength" | "maxLength":
            return SchemaProblem(format_path(path), error.message, path)
        case _:
            return SchemaProblem(format_path(path), error.message, path)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def with_defaults(kind: KindSchema, document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a valid ``document`` with every schema default filled in."""
    plan = kind._built.get("defaults")
    if plan is None:
        plan = kind._built["defaults"] = _plan(kind.schema, kind.schema, {})
    result: dict[str, Any] = _copy_containers(dict(document))
    _fill(plan, result)
    return result


def _copy_containers(value: Any) -> Any:
    """A copy of the mappings and lists of a loaded document (or of a schema's default):
    filling in defaults adds to mappings only, so the scalars (immutable) are shared."""
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = root
    for part in str(ref).removeprefix("#/").split("/"):
        node = node[part]
    merged = dict(node)
    merged.update({k: v for k, v in schema.items() if k != "$ref"})
    return merged


_IMMUTABLE = (str, int, float, bool, type(None))


class _Defaults:
    """What filling in defaults does at one schema node, worked out once per kind: each
    property's default (if any) and its own node, and the node of an array's items."""

    __slots__ = ("items", "keep", "properties")

    def __init__(self) -> None:
        self.properties: list[tuple[str, bool, Any, bool, _Defaults]] = []
        self.items: _Defaults | None = None
        self.keep: list[Mapping[str, Any]] = []  # the resolved schemas the plan is keyed by


def _plan(
    schema: Mapping[str, Any], root: Mapping[str, Any], planned: dict[int, _Defaults]
) -> _Defaults:
    # Keyed by the schema mapping itself (kept alive by the plan), so a $ref that comes
    # round to itself ends the walk instead of recursing.
    known = planned.get(id(schema))
    if known is not None:
        return known
    node = planned[id(schema)] = _Defaults()
    node.keep.append(schema)
    resolved = _resolve(schema, root)
    for name, prop in resolved.get("properties", {}).items():
        prop = _resolve(prop, root)
        node.keep.append(prop)
        has = "default" in prop
        default = prop.get("default")
        shared = isinstance(default, _IMMUTABLE)
        node.properties.append((name, has, default, shared, _plan(prop, root, planned)))
    if "items" in resolved:
        node.items = _plan(resolved["items"], root, planned)
    return node


def _fill(plan: _Defaults, value: Any) -> None:
    if isinstance(value, dict):
        for name, has, default, shared, sub in plan.properties:
            if name not in value and has:
                value[name] = default if shared else _copy_containers(default)
            if name in value:
                _fill(sub, value[name])
    elif isinstance(value, list) and plan.items is not None:
        for item in value:
            _fill(plan.items, item)


@dataclass(frozen=True)
class FieldDoc:
    """One field of a kind, for ``kvmrec explain``."""

    path: str
    type: str
    required: bool
    default: Any
    description: str
    enum: tuple[Any, ...] | None


def fields(kind: KindSchema) -> Iterator[FieldDoc]:
    """Every field of a kind, depth first, for documentation."""
    yield from _walk(kind.schema, (), kind.schema, required=True)


def _walk(
    schema: Mapping[str, Any], path: tuple[str, ...], root: Mapping[str, Any], *, required: bool
) -> Iterator[FieldDoc]:
    schema = _resolve(schema, root)
    if path:
        kind = schema.get("type", "object")
        yield FieldDoc(
            path=".".join(path),
            type="|".join(kind) if isinstance(kind, list) else str(kind),
            required=required,
            default=schema.get("default"),
            description=" ".join(str(schema.get("description", "")).split()),
            enum=tuple(schema["enum"]) if "enum" in schema else None,
        )
    needed = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, (*path, name), root, required=name in needed)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _walk_items(items, path, root)


def _walk_items(
    items: Mapping[str, Any], path: tuple[str, ...], root: Mapping[str, Any]
) -> Iterator[FieldDoc]:
    items = _resolve(items, root)
    needed = set(items.get("required", []))
    base = (*path[:-1], path[-1] + "[]") if path else ("[]",)
    for name, prop in items.get("properties", {}).items():
        yield from _walk(prop, (*base, name), root, required=name in needed)


def find_kind(text: str) -> KindSchema | None:
    """The kind ``text`` names, as kubectl takes it: any case, singular or plural."""
    wanted = text.lower()
    for kind in registry().values():
        if wanted in (kind.kind.lower(), kind.plural):
            return kind
    return None


def canonical_kind(text: str) -> str:
    """The kind's own spelling (``domain`` -> ``Domain``), or a ValueError naming the kinds."""
    kind = find_kind(text)
    if kind is None:
        raise ValueError(f"unknown kind {text!r} (known: {', '.join(registry())})")
    return kind.kind


def field_path(kind: KindSchema, text: str) -> str:
    """The path of a field as ``fields`` names it, from what an operator types.

    ``spec.disks.bus``, ``disks.bus`` (``spec.`` may be left out) and ``spec.disks[].bus``
    all give ``spec.disks[].bus``: the items of an array are walked into, as kubectl
    explain does. A segment that names no field is a ValueError naming it and the fields
    that exist there.
    """
    segments = [s.split("[", 1)[0] for s in text.split(".")]
    if any(not s for s in segments):
        raise ValueError(f"{text!r} is not a field path (FIELD[.FIELD...])")
    top = _resolve(kind.schema, kind.schema).get("properties", {})
    implied = segments[0] not in top and "spec" in top
    if implied:
        segments.insert(0, "spec")
    node: Mapping[str, Any] = kind.schema
    path: list[str] = []
    for segment in segments:
        node = _resolve(node, kind.schema)
        while node.get("type") == "array" and isinstance(node.get("items"), Mapping):
            path[-1] += "[]"
            node = _resolve(node["items"], kind.schema)
        properties = node.get("properties", {})
        if segment not in properties:
            where = ".".join([kind.kind, *path])
            if not properties:
                raise ValueError(f"{where} has no fields, so no {segment!r}: it is a value")
            known = ", ".join(properties)
            if implied and path == ["spec"]:
                where, known = kind.kind, f"{', '.join(top)}; and in spec: {known}"
            raise ValueError(f"{where} has no field {segment!r} (fields there: {known})")
        path.append(segment)
        node = properties[segment]
    return ".".join(path)
