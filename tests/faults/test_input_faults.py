"""Faults of the input: an inotify storm on the manifest directory, and generated bad YAML.

Every test asserts what the service ended up doing and prints the counts the README quotes
(run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import random
import string
import time
from pathlib import Path
from typing import Any

import libvirt
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realstack import Controller, domain_manifest, state_of, wait_for

from kvmrec import store as stores
from kvmrec.api.errors import ManifestError
from kvmrec.api.kinds import Manifest
from kvmrec.api.manifests import parse_file

# -- 1. inotify storm -------------------------------------------------------------------

STORM_FILES = 200
STORM_OPS = 2000
NAME_POOL = 260  # more names than files: a write picks one no other file holds


def _storm_text(name: str, vcpus: int, domain_type: str) -> str:
    # metadata last and the name quoted: a truncated (partial) write never holds a valid
    # name, so it can never name a domain outside the prefix or another pool member.
    return (
        "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nspec:\n"
        f"  type: {domain_type}\n  vcpus: {vcpus}\n  memory: 64Mi\n"
        "  runStrategy: Halted\n"
        f'metadata:\n  name: "{name}"\n'
    )


def _expected(manifests: Path) -> tuple[dict[str, tuple[str, int]], set[str]]:
    """From the files on disk: {domain name: (file, vcpus)} and the broken files."""
    objects: dict[str, tuple[str, int]] = {}
    broken: set[str] = set()
    for path in sorted(manifests.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(".yaml"):
            continue
        try:
            found: list[Manifest] = parse_file(str(path), path.read_bytes())
        except ManifestError:
            broken.add(path.name)
            continue
        for m in found:
            assert m.name not in objects, f"the storm made a duplicate {m.name}"
            objects[m.name] = (path.name, int(m.spec["vcpus"]))
    return objects, broken


def _stored(state: Path) -> dict[str, tuple[str, int, bool]]:
    store = stores.open(state, create=False)
    try:
        return {
            o.key.name: (Path(o.source).name, int(o.spec["vcpus"]), o.deleting)
            for o in store.list("Domain")
        }
    finally:
        store.close()


def _libvirt_domains(conn: Any, prefix: str) -> dict[str, int] | None:
    """{name: vcpus} of the prefix's domains; None if one vanished while we looked."""
    try:
        return {
            d.name(): int(d.info()[3])
            for d in conn.listAllDomains(0)
            if d.name().startswith(prefix)
        }
    except libvirt.libvirtError:
        return None


def test_inotify_storm(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    rng = random.Random(20240611)
    dtype = stack["KVMREC_DOMAIN_TYPE"]
    files = [f"s{i:03d}.yaml" for i in range(STORM_FILES)]
    pool = [f"{prefix}-d{i:03d}" for i in range(NAME_POOL)]
    d = controller.manifests
    on_disk: dict[str, str] = {}  # file -> domain name it holds (partial writes included)
    partial: set[str] = set()  # files whose content is a partial write

    def free_name(file: str) -> str:
        held = {n for f, n in on_disk.items() if f != file}
        own = on_disk.get(file)
        if own is not None and own not in held and rng.random() < 0.7:
            return own
        return rng.choice([n for n in pool if n not in held])

    def text_for(file: str) -> tuple[str, str]:
        name = free_name(file)
        return name, _storm_text(name, rng.randint(1, 8), dtype)

    # The starting set, converged before the storm.
    for file in files:
        name, text = text_for(file)
        (d / file).write_text(text)
        on_disk[file] = name
    controller.start(resync=3600)
    wait_for(
        lambda: len(_libvirt_domains(conn, prefix) or {}) == STORM_FILES,
        timeout=90,
        what="the 200 starting domains",
    )

    counts = dict.fromkeys(["write", "partial", "editor", "delete", "recreate", "rename"], 0)
    for _ in range(STORM_OPS):
        file = rng.choice(files)
        path = d / file
        roll = rng.random()
        if file not in on_disk:
            op = "recreate" if roll < 0.8 else "rename"
        elif roll < 0.35:
            op = "write"
        elif roll < 0.45:
            op = "partial"
        elif roll < 0.70:
            op = "editor"
        elif roll < 0.85:
            op = "delete"
        else:
            op = "rename"
        if op in ("write", "recreate"):
            name, text = text_for(file)
            path.write_text(text)  # in place: open(O_TRUNC), write, close
            on_disk[file] = name
        elif op == "partial":
            name, text = text_for(file)
            with path.open("w") as f:
                f.write(text[: rng.randint(1, len(text) - 3)])
            on_disk[file] = name
            partial.add(file)
        elif op == "editor":
            name, text = text_for(file)
            tmp = d / f".{file}.swp"
            tmp.write_text(text)
            os.replace(tmp, path)
            on_disk[file] = name
        elif op == "delete":
            path.unlink()
            del on_disk[file]
            partial.discard(file)
        else:  # rename some existing file onto this name (over it, or into a gap)
            sources = [f for f in on_disk if f != file]
            src = rng.choice(sources)
            os.replace(d / src, path)
            on_disk[file] = on_disk.pop(src)
            partial.discard(file)
            if src in partial:
                partial.discard(src)
                partial.add(file)
        if op in ("write", "recreate", "editor"):
            partial.discard(file)
        counts[op] += 1
    # A broken file keeps the last good state the service happened to see, which no test
    # can know: the storm's partial writes are completed; deliberately broken files are
    # new ones, with no good state ever.
    for file in sorted(partial):
        (d / file).write_text(_storm_text(on_disk[file], rng.randint(1, 8), dtype))
    counts["completed_partials"] = len(partial)
    for i in range(5):
        (d / f"broken-{i}.yaml").write_text(f"apiVersion: kvmrec.io/v1alpha1\nkind: [{i}\n")
    # Most of the set must survive the storm, or the mass-delete guard (rightly) refuses.
    if len(on_disk) < STORM_FILES * 0.6:
        for file in files:
            if file not in on_disk:
                name, text = text_for(file)
                (d / file).write_text(text)
                on_disk[file] = name
    last_write = time.monotonic()

    expected, broken = _expected(d)
    want = {n: vcpus for n, (_, vcpus) in expected.items()}
    want_sources = {n: f for n, (f, _) in expected.items()}

    def mismatch() -> str:
        """What still differs from the files on disk ("" when nothing)."""
        live = _libvirt_domains(conn, prefix)
        if live != want:
            if live is None:
                return "libvirt: a domain vanished while listing"
            return (
                f"libvirt: missing {sorted(set(want) - set(live))[:5]} "
                f"extra {sorted(set(live) - set(want))[:5]} "
                f"vcpus {[n for n in want if n in live and live[n] != want[n]][:5]}"
            )
        stored = {n: (f, v) for n, (f, v, _) in _stored(controller.state).items()}
        wanted = {n: (want_sources[n], want[n]) for n in want}
        if stored != wanted:
            return f"store: {sorted(set(stored.items()) ^ set(wanted.items()))[:6]}"
        _, body = controller.status()
        objs = {o["name"]: o for o in body.get("objects", [])}
        behind = [
            n
            for n, o in objs.items()
            if not o["synced"] or o["deleting"] or o["observedGeneration"] != o["generation"]
        ]
        if set(objs) != set(want) or behind:
            return f"status: behind {behind[:5]}"
        errors = {Path(e["source"]).name for e in body.get("errors", [])}
        if errors != broken:
            return f"errors: unexpected {sorted(errors - broken)} missing {sorted(broken - errors)}"
        return ""

    deadline = time.monotonic() + 120
    while (diff := mismatch()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not diff, f"not converged in 120s: {diff}; log {controller.log}"
    took = time.monotonic() - last_write
    assert controller.running, controller.log_text()[-3000:]
    _, body = controller.status()
    errors = {Path(e["source"]).name for e in body["errors"]}
    assert errors == broken
    assert all(state_of(conn, n) == "shutoff" for n in want)
    print(
        f"\nSTORM operations={STORM_OPS} ({counts}) files={STORM_FILES} "
        f"final_files={len(on_disk)} final_objects={len(want)} broken_files={len(broken)} "
        f"convergence_after_last_write={took:.1f}s"
    )


# -- 2. generated manifests -------------------------------------------------------------

KNOWN_FIELDS = [
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "labels",
    "type",
    "vcpus",
    "memory",
    "runStrategy",
    "disks",
    "interfaces",
    "path",
    "size",
    "network",
    "bridge",
    "forward",
    "ip",
    "dhcp",
    "schedule",
    "every",
    "retention",
    "ports",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "64Mi",
            "2Gi",
            "-1Ki",
            "1e400",
            "kvm",
            "Halted",
            "kvmrec.io/v1alpha1",
            "Domain",
            "Network",
            "OvsBridge",
            "SnapshotPolicy",
            "Snapshot",
            "ÄÖ-ü",
            "名前",
            "a" * 70,
            "",
            "0x10",
            "null",
            "~",
            "*/5 * * * *",
        ]
    ),
)
keys = st.one_of(st.sampled_from(KNOWN_FIELDS), st.text(min_size=1, max_size=12))
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=6)
    ),
    max_leaves=30,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A YAML text: mostly almost-manifests with wrong parts, sometimes raw garbage."""
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.text(max_size=200))
    if shape == 1:  # deep nesting
        depth = draw(st.integers(50, 3000))
        return "a: " + "[" * depth + "]" * depth + "\n"
    if shape == 2:  # a small alias bomb, or a recursive alias
        width = draw(st.integers(2, 9))
        levels = draw(st.integers(2, 9))
        lines = ["l0: &l0 [" + ",".join(["x"] * width) + "]"]
        for i in range(1, levels):
            lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
        if draw(st.booleans()):
            lines.append("r: &r [*r]")
        body = "\n".join("  " + line for line in lines)
        return (
            "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n"
            f"  name: x\n  labels: *l{levels - 1}\nspec:\n{body}\n"
        )
    if shape in (5, 6, 7):  # a valid Domain, then (6, 7) one field made wrong
        name = draw(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True))
        spec: dict[str, Any] = {
            "type": draw(st.sampled_from(["kvm", "qemu"])),
            "vcpus": draw(st.integers(1, 16)),
            "memory": draw(st.sampled_from(["64Mi", "1Gi", "512Mi", "2Gi"])),
            "runStrategy": draw(
                st.sampled_from(["Always", "Halted", "Manual", "Once", "RerunOnFailure"])
            ),
        }
        if shape >= 6:
            spec[
                draw(
                    st.sampled_from(
                        [
                            "type",
                            "vcpus",
                            "memory",
                            "runStrategy",
                            "autostart",
                            "disks",
                            "interfaces",
                            "graphics",
                        ]
                    )
                )
            ] = draw(values)
        valid = {
            "apiVersion": "kvmrec.io/v1alpha1",
            "kind": "Domain",
            "metadata": {"name": name},
            "spec": spec,
        }
        return yaml.safe_dump(valid, allow_unicode=True, sort_keys=False)
    doc: dict[str, Any] = {
        "apiVersion": draw(st.sampled_from(["kvmrec.io/v1alpha1"] * 4 + ["v1", None])),
        "kind": draw(
            st.sampled_from(["Domain", "Network", "OvsBridge", "SnapshotPolicy", "Snapshot", "Pod"])
        ),
        "metadata": {
            "name": draw(
                st.one_of(
                    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
                    st.text(max_size=70),
                    values,
                )
            )
        },
        "spec": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["kvm", "qemu", 3]),
                        "memory": st.one_of(scalars, st.just("64Mi")),
                        "vcpus": st.one_of(scalars, st.integers(1, 4)),
                    },
                    optional={
                        "runStrategy": scalars,
                        "disks": values,
                        "interfaces": values,
                        "extra": values,
                    },
                ),
                values,
            )
        ),
    }
    if draw(st.booleans()):
        doc = {k: v for k, v in doc.items() if draw(st.booleans()) or k == "kind"}
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    if shape == 3:  # several documents, one maybe a repeat
        text = text + "---\n" + text
    if shape == 4:  # an anchor reused through a merge key and an alias
        text = "base: &b {vcpus: 2}\n---\n" + text + "extra: &e [1, 2]\nmore: *e\n"
    return text


_CASES = {"total": 0, "accepted": 0, "rejected": 0}


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents())
def test_generated_manifests_parse_or_fail_cleanly(text: str) -> None:
    _CASES["total"] += 1
    try:
        found = parse_file("gen.yaml", text.encode("utf-8", "surrogatepass"))
    except ManifestError as exc:
        _CASES["rejected"] += 1
        assert exc.problems
        for problem in exc.problems:
            assert problem.source == "gen.yaml"
            assert problem.reason.strip()
            assert str(problem)
        return
    _CASES["accepted"] += 1
    assert isinstance(found, list)
    for m in found:
        assert isinstance(m, Manifest) and m.kind and m.name


def test_generated_manifest_counts() -> None:
    # Runs after the property above in file order; the figures are for the README.
    print(
        f"\nGENERATED cases={_CASES['total']} accepted={_CASES['accepted']} "
        f"rejected={_CASES['rejected']}"
    )
    assert _CASES["total"] >= 1000 or _CASES["total"] == 0


def _bad_files(count: int) -> list[str]:
    """Deterministic bad texts, one of each kind of fault, then repeats with variations."""
    rng = random.Random(7)
    good_head = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: {n}\n"
    kinds = [
        lambda n: "a: " + "[" * 5000 + "]" * 5000,  # deeper than the parser recurses
        lambda n: "a: &a [*a]\n" + good_head.format(n=n),
        lambda n: good_head.format(n=n) + "spec: {type: kvm, vcpus: 99999999999999999999999}\n",
        lambda n: good_head.format(n=n) + "spec: {type: kvm, memory: lots, vcpus: 1}\n",
        lambda n: good_head.format(n="Ünïcode-" + n) + "spec: {type: kvm, memory: 64Mi}\n",
        lambda n: good_head.format(n=n) + "spec: {type: kvm, memory: 64Mi, bogus: 1}\n",
        lambda n: good_head.format(n=n) + "spec: [1, 2, 3]\n",
        lambda n: good_head.format(n=n) + "spec: {type: kvm\n",
        lambda n: "kind: Domain\n",
        lambda n: "\x00\x01binary",
        lambda n: (
            "l0: &l0 [x,x,x,x,x,x,x,x,x]\n"
            + "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
        ),
        lambda n: good_head.format(n=n) + "metadata: {}\nspec: {}\n",  # duplicate key
    ]
    out = []
    for i in range(count):
        text = kinds[i % len(kinds)](f"bad{i}")
        if i >= len(kinds):
            text += f"# {''.join(rng.choices(string.ascii_letters, k=8))}\n"
        out.append(text)
    return out


def test_bad_files_dropped_into_a_running_service(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    good = f"{prefix}-good"
    controller.write(
        "good.yaml", domain_manifest(good, stack["KVMREC_DOMAIN_TYPE"], runStrategy="Always")
    )
    controller.start(resync=3600)
    wait_for(
        lambda: (controller.object(good) or {}).get("ready"),
        timeout=60,
        what="the good domain Ready",
    )
    bad = _bad_files(50)
    names = []
    started = time.monotonic()
    for i, text in enumerate(bad):
        name = f"bad-{i:02d}.yaml"
        names.append(name)
        path = controller.manifests / name
        path.write_bytes(text.encode())
        path.chmod(0o644)
        time.sleep(0.05)

    def all_reported() -> bool:
        _, body = controller.status()
        return {Path(e["source"]).name for e in body.get("errors", [])} == set(names)

    wait_for(all_reported, timeout=60, what="every bad file in status errors")
    reported_after = time.monotonic() - started
    _, body = controller.status()
    for error in body["errors"]:
        assert error["message"].strip(), error
    assert controller.running, controller.log_text()[-3000:]
    assert state_of(conn, good) == "running"
    obj = controller.object(good)
    assert obj and obj["ready"] and obj["synced"], obj
    assert [o["name"] for o in body["objects"]] == [good]

    for name in names:
        controller.remove(name)
    wait_for(
        lambda: controller.status()[1].get("errors") == [],
        timeout=30,
        what="errors cleared after removing the bad files",
    )
    assert controller.running
    assert state_of(conn, good) == "running"
    code, _ = controller.status()
    assert code == 0
    print(
        f"\nBADFILES files={len(names)} reported_within={reported_after:.1f}s "
        f"errors_after_removal=0 good_domain=running"
    )
