"""Parsing manifest files into accepted documents, or into problems that name their place.

A file may hold several YAML documents (``---``). Each is checked in turn: that it is a
mapping, its ``apiVersion`` and ``kind``, then the kind's schema (``crds/``), then rules a
schema cannot say (quantities, duplicate names). YAML is composed into nodes first so every
problem can carry the line of the field it is about.

A file is accepted whole or not at all: if any document has a problem, ``parse_file``
raises ``ManifestError`` with all of them, and the caller keeps the file's last good state.

The YAML itself is loaded by ``api/yaml_loading.py``, within bounds no file can make kvmrec
exceed (documents, nodes with aliases expanded, depth).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from kvmrec.api import quantities, schema
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import Manifest, derived_mac, spec_digest
from kvmrec.api.yaml_loading import Path, _DuplicateKey, _load, _Refused
from kvmrec.snapshots import schedule

MIN_MEMORY = 1024 * 1024
READ_ONLY_BUSES = ("virtio", "scsi")


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
    full = schema.with_defaults(kind, document)
    spec = full["spec"]
    found = [
        problem(f, r, path, label)
        for f, r, path in _semantic_problems(kind_name, full["metadata"]["name"], spec)
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


def _semantic_problems(
    kind: str, name: str, spec: Mapping[str, Any]
) -> list[tuple[str, str, Path]]:
    """Rules the schema cannot express."""
    if kind == "Domain":
        return _domain_problems(name, spec)
    if kind == "Network":
        return _network_problems(spec)
    if kind == "OvsBridge":
        return _bridge_problems(name, spec)
    if kind == "SnapshotPolicy":
        return _policy_problems(spec)
    return []


def _policy_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []
    if ("schedule" in spec) == ("every" in spec):
        problems.append(("spec.schedule", "needs exactly one of schedule or every", ("spec",)))
    try:
        if "schedule" in spec:
            schedule.Cron.parse(spec["schedule"])
    except schedule.ScheduleError as exc:
        problems.append(("spec.schedule", str(exc), ("spec", "schedule")))
    try:
        if "every" in spec:
            schedule.parse_duration(spec["every"])
    except schedule.ScheduleError as exc:
        problems.append(("spec.every", str(exc), ("spec", "every")))
    if not spec.get("domains") and not (spec.get("selector") or {}).get("matchLabels"):
        problems.append(("spec.selector", "needs selector.matchLabels or domains", ("spec",)))
    return problems


def _bridge_problems(name: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []
    seen: dict[str, int] = {}
    for i, port in enumerate(spec.get("ports", [])):
        at: Path = ("spec", "ports", i, "name")
        if port["name"] == name:
            problems.append((schema.format_path(at), "is the bridge's own port", at))
        first = seen.setdefault(port["name"], i)
        if first != i:
            reason = f"{port['name']!r} is already used by spec.ports[{first}]"
            problems.append((schema.format_path(at), reason, at))
    for key in spec.get("externalIds", {}):
        if key.startswith("kvmrec-"):
            at = ("spec", "externalIds", key)
            problems.append((schema.format_path(at), "kvmrec- keys are kvmrec's own", at))
    return problems


def _network_problems(spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []

    def add(path: Path, reason: str) -> None:
        problems.append((schema.format_path(path), reason, path))

    forward = spec.get("forward")
    if forward == "bridge":
        if "bridge" not in spec:
            add(("spec", "bridge"), "is required with forward: bridge (the bridge to join)")
        if "ip" in spec:
            add(("spec", "ip"), "is not allowed with forward: bridge (libvirt does no addressing)")
    else:
        if "virtualport" in spec:
            add(("spec", "virtualport"), "goes only with forward: bridge")
        if forward in ("nat", "route") and "ip" not in spec:
            add(("spec", "ip"), f"is required with forward: {forward}")
    ip = spec.get("ip")
    if not ip:
        return problems
    try:
        subnet = ipaddress.IPv4Interface(f"{ip['address']}/{ip.get('prefix', 24)}").network
    except ValueError as exc:
        add(("spec", "ip", "address"), str(exc))
        return problems

    def inside(path: Path, value: str) -> ipaddress.IPv4Address | None:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError as exc:
            add(path, str(exc))
            return None
        if address not in subnet:
            add(path, f"{value} is outside {subnet}")
        return address

    dhcp = ip.get("dhcp")
    if dhcp:
        start = inside(("spec", "ip", "dhcp", "start"), dhcp["start"])
        end = inside(("spec", "ip", "dhcp", "end"), dhcp["end"])
        if start and end and start > end:
            add(("spec", "ip", "dhcp", "end"), f"{end} comes before start {start}")
        seen_macs: dict[str, int] = {}
        seen_ips: dict[str, int] = {}
        for i, host in enumerate(dhcp.get("hosts", [])):
            at: Path = ("spec", "ip", "dhcp", "hosts", i)
            inside((*at, "ip"), host["ip"])
            for key, seen in (("mac", seen_macs), ("ip", seen_ips)):
                first = seen.setdefault(host[key], i)
                if first != i:
                    add((*at, key), f"{host[key]} is already used by hosts[{first}]")
    return problems


def _domain_problems(name: str, spec: Mapping[str, Any]) -> list[tuple[str, str, Path]]:
    problems: list[tuple[str, str, Path]] = []

    def add(path: Path, reason: str) -> None:
        problems.append((schema.format_path(path), reason, path))

    sizes: dict[str, int] = {}
    for field in ("memory", "maxMemory"):
        if field not in spec:
            continue
        try:
            sizes[field] = quantities.parse_bytes(spec[field])
            if sizes[field] < MIN_MEMORY:
                add(("spec", field), f"{spec[field]!r} is below 1Mi")
        except ValueError as exc:
            add(("spec", field), str(exc))
    if sizes.get("maxMemory", 1 << 62) < sizes.get("memory", 0):
        add(("spec", "maxMemory"), f"must be at least memory ({spec['memory']})")
    if spec.get("maxVcpus", 1 << 30) < spec.get("vcpus", 1):
        add(("spec", "maxVcpus"), f"must be at least vcpus ({spec['vcpus']})")

    sources: dict[str, int] = {}
    for i, disk in enumerate(spec.get("disks", [])):
        at: Path = ("spec", "disks", i)
        has_path, has_volume = "path" in disk, "pool" in disk or "volume" in disk
        if has_path == has_volume:
            add(at, "needs either path, or pool and volume")
        elif has_volume and not ("pool" in disk and "volume" in disk):
            add(at, "pool and volume go together")
        source = disk.get("path") or f"{disk.get('pool')}/{disk.get('volume')}"
        first = sources.setdefault(source, i)
        if first != i:
            add(
                (*at, "path" if has_path else "volume"),
                f"{source!r} is already used by spec.disks[{first}]",
            )
        for ref in ("path", "backingImage"):
            if ref in disk and ".." in disk[ref].split("/"):
                add((*at, ref), "must not contain '..'")
        clone = disk.get("cloneFrom")
        if clone is not None:
            if ("path" in clone) == ("domain" in clone):
                add((*at, "cloneFrom"), "needs either path or domain")
            if "path" in clone and ".." in clone["path"].split("/"):
                add((*at, "cloneFrom", "path"), "must not contain '..'")
            if "backingImage" in disk:
                add((*at, "cloneFrom"), "cannot be combined with backingImage")
        if "backingImage" in disk and disk.get("format", "qcow2") != "qcow2":
            add((*at, "backingImage"), "needs format qcow2")
        if disk.get("device") == "cdrom":
            for field in ("size", "backingImage", "cloneFrom", "pool", "volume"):
                if field in disk:
                    add((*at, field), "is not allowed for a cdrom")
            if disk.get("bus") in ("virtio",):
                add((*at, "bus"), "a cdrom cannot be on virtio (use sata, scsi or ide)")
        plain_disk = disk.get("device", "disk") == "disk"
        if disk.get("readOnly") and plain_disk and disk.get("bus", "virtio") not in READ_ONLY_BUSES:
            add((*at, "readOnly"), "read-only disks need bus virtio or scsi (QEMU refuses others)")
        if "size" in disk:
            try:
                if quantities.parse_bytes(disk["size"]) < MIN_MEMORY:
                    add((*at, "size"), f"{disk['size']!r} is below 1Mi")
            except ValueError as exc:
                add((*at, "size"), str(exc))

    os_ = spec.get("os") or {}
    for field in ("initrd", "cmdline"):
        if field in os_ and "kernel" not in os_:
            add(("spec", "os", field), "needs os.kernel (it belongs to direct kernel boot)")
    for field in ("kernel", "initrd"):
        if field in os_ and ".." in os_[field].split("/"):
            add(("spec", "os", field), "must not contain '..'")
    if "kernel" in os_ and os_.get("firmware") == "efi":
        add(("spec", "os", "kernel"), "direct kernel boot needs firmware bios")
    if spec.get("syncClock") and not spec.get("guestAgent"):
        add(("spec", "syncClock"), "needs guestAgent: true (the clock is set through the agent)")

    names: dict[str, int] = {}
    macs: dict[str, int] = {}
    for i, iface in enumerate(spec.get("interfaces", [])):
        at = ("spec", "interfaces", i)
        if ("network" in iface) == ("bridge" in iface):
            add(at, "needs either network or bridge")
        if "virtualport" in iface and "network" in iface:
            add(
                (*at, "virtualport"),
                "goes with bridge; a network's own definition says whether it is Open vSwitch",
            )
        first = names.setdefault(iface["name"], i)
        if first != i:
            add((*at, "name"), f"{iface['name']!r} is already used by spec.interfaces[{first}]")
            continue
        # Derived MACs count too: a written one may equal another interface's derived one.
        mac = iface.get("mac") or derived_mac(name, iface["name"])
        first = macs.setdefault(mac, i)
        if first != i:
            add((*at, "mac"), f"{mac} is already used by spec.interfaces[{first}]")
    return problems


def _nearest(path: Path, lines: Mapping[Path, int]) -> Path:
    """The longest prefix of ``path`` that has a known line."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return path[:end]
    return ()
