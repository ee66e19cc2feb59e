"""Parsing manifest files into accepted documents, or into problems that name their place.

A file may hold several YAML documents (``---``). Each is checked in turn: that it is a
mapping, its ``apiVersion`` and ``kind``, then the kind's schema (``crds/``), then rules a
schema cannot say (quantities, duplicate names). YAML is composed into nodes first so every
problem can carry the line of the field it is about, and duplicate keys (which PyYAML would
silently collapse) are errors.

A file is accepted whole or not at all: if any document has a problem, ``parse_file``
raises ``ManifestError`` with all of them, and the caller keeps the file's last good state.

Bounded work. kvmrec parses whatever lands in its directory, as root, in the process that
converges the host, so no file may make it work without bound. The source reads at most
1 MiB of a file; here a file holds at most ``MAX_DOCUMENTS`` documents, a document at most
``MAX_NODES`` YAML nodes and ``MAX_DEPTH`` levels of nesting. Nodes are counted with their
aliases expanded, while the document is being composed: an alias stands for a copy of its
anchor's whole tree once the document is constructed, validated and compared, so the few
hundred bytes of a "billion laughs" (anchors of lists of aliases of anchors...) are refused
at the alias that crosses the limit, before any of that work; aliases used modestly (a
shared block of settings) stay allowed. An alias to a node that contains it (a recursive
structure, which PyYAML would build) is refused outright. Each refusal names the line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from kvmrec.api import quantities, schema
from kvmrec.api.errors import ManifestError, ManifestProblem
from kvmrec.api.kinds import Manifest, derived_mac, spec_digest
from kvmrec.snapshots import schedule

MIN_MEMORY = 1024 * 1024

# Far beyond any real host (each Domain is one document; a production host has dozens),
# yet small enough that a file of empty documents costs nothing.
MAX_DOCUMENTS = 1_000
# A Domain with 16 disks and 16 interfaces is about 300 nodes, a Network with a thousand
# DHCP leases about 7,000; a hundred thousand is generous, and still parsed, validated and
# compared in well under a second.
MAX_NODES = 100_000
# A manifest nests about 7 levels deep (spec.ip.dhcp.hosts[0].mac). The parser, the
# validator and the comparisons all recurse, so depth is bounded well below Python's
# recursion limit.
MAX_DEPTH = 100
READ_ONLY_BUSES = ("virtio", "scsi")
Path = tuple[str | int, ...]


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
    if "host" in spec and "hostSelector" in spec:
        add(
            ("spec", "hostSelector"),
            "cannot be combined with spec.host (host pins the Domain to one host, "
            "hostSelector lets kvmrec choose among matching hosts)",
        )

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


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, path: Path) -> None:
        super().__init__(key)
        self.key = key
        self.line = line
        self.path = path
        self.document: int | None = None


class _Refused(Exception):
    """A document (or file) over one of the limits; ``line`` is where it went over."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.document: int | None = None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting while it composes: nodes (aliases expanded) and depth.

    ``compose_node`` is where PyYAML turns every node and every alias of a document into
    the node graph; it is called once per node written in the file, so the counting costs
    one addition each, and an alias adds its anchor's expanded size (memoized per node, so
    the count itself stays linear however deep the aliases go)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._nodes = 0  # of the current document, aliases expanded
        self._depth = 0
        self._open: set[str] = set()  # anchors of the collections being composed
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded

    def compose_document(self) -> yaml.Node | None:
        self._nodes, self._sizes = 0, {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Refused(
                    f"alias *{event.anchor} refers to a node that contains it "
                    "(a recursive structure)",
                    line,
                )
            target = self.anchors.get(event.anchor)
            if target is not None:  # else PyYAML reports the undefined alias
                self._count(self._size(target), line, f"alias *{event.anchor}")
            return super().compose_node(parent, index)
        self._count(1, line, None)
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", line)
        anchor = event.anchor if isinstance(event, yaml.CollectionStartEvent) else None
        self._depth += 1
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)

    def _count(self, nodes: int, line: int, alias: str | None) -> None:
        self._nodes += nodes
        if self._nodes <= MAX_NODES:
            return
        if alias is None:
            raise _Refused(f"more than {MAX_NODES} YAML nodes in one document", line)
        raise _Refused(
            f"{alias} expands the document to more than {MAX_NODES} YAML nodes; "
            "aliases that multiply a document (a 'billion laughs') are refused",
            line,
        )

    def _size(self, node: yaml.Node) -> int:
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.MappingNode):
            size += sum(self._size(k) + self._size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(self._size(item) for item in node.value)
        self._sizes[id(node)] = size
        return size


def _load(text: str) -> list[tuple[Any, dict[Path, int]]]:
    """Documents of ``text`` with a map from field path to 1-based line."""
    loader = _BoundedLoader(text)
    try:
        documents: list[tuple[Any, dict[Path, int]]] = []
        count = 0
        while loader.check_node():
            count += 1
            if count > MAX_DOCUMENTS:
                mark = loader.peek_event().start_mark  # type: ignore[no-untyped-call]
                too_many = _Refused(
                    f"more than {MAX_DOCUMENTS} documents in one file (split it into several)",
                    mark.line + 1,
                )
                too_many.document = count
                raise too_many
            try:
                node = loader.get_node()
            except _Refused as exc:
                exc.document = count
                raise
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


def _index_lines(
    node: yaml.Node, path: Path, lines: dict[Path, int], seen_nodes: set[int] | None = None
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    # An alias is the same node again: walk it once, or an alias bomb costs exponential time.
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen and key != "<<":
                raise _DuplicateKey(key, key_node.start_mark.line + 1, (*path, key))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, seen_nodes)
