"""``kvmrec plan`` prints exactly what the next reconcile does, for every kind.

For generated pairs of desired state (a manifest) and live state (made by an earlier
reconcile of another manifest, then changed by hand, or made by hand altogether), the plan
of the object is taken, then the object is reconciled with every step the act phase carries
out recorded. A plan that acts must list exactly those steps (action, fields, detail); a
plan that is blocked or waits must be followed by a reconcile that acts on nothing.

Domains and snapshots live on libvirt's in-process ``test:///default`` (shared by the whole
process: every name here is ``ut-<random>-...`` and removed again). Its networks cannot be
read as the Network kind reads them (no inactive XML), so the Network and OvsBridge
properties are in test_kinds_with_fakes.py, on its in-memory backends.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.engine.clock import FakeClock
from kvmrec.engine.contract import PermanentError
from kvmrec.reconcilers.domain import DomainReconciler
from kvmrec.reconcilers.plans import Step
from kvmrec.reconcilers.reconciling import Reconciler
from kvmrec.reconcilers.snapshot_policy import SnapshotPolicyReconciler
from kvmrec.reconcilers.snapshots import SnapshotReconciler
from kvmrec.store.base import Store

URI = "test:///default"
T0 = datetime(2024, 3, 4, 5, 0, tzinfo=UTC)
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Acted:
    """The steps the act phase carried out, as the generic layer reports them."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def __call__(self, key: ObjectKey, step: Step) -> None:
        self.steps.append(step)


def check(reconciler: Reconciler[Any, Any], acted: Acted, store: Store, key: ObjectKey) -> None:
    """Plan ``key``, reconcile it, and hold the plan to what the reconcile did."""
    obj = store.get(key)
    assert obj is not None
    plan = reconciler.plan(obj, store.get_status(key))
    acted.steps.clear()
    with contextlib.suppress(PermanentError):
        reconciler.reconcile(key)
    done = [s for s in acted.steps if s.visible]
    kind = reconciler.of
    if plan.blocked is not None or plan.wait_reason in kind.waits | kind.quiet_waits:
        assert done == [], (plan, done)
    else:
        assert done == plan.visible, (plan.visible, done)


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    c = libvirt.open(URI)
    yield c
    c.close()


@pytest.fixture(scope="module")
def hv() -> Iterator[Hypervisor]:
    h = Hypervisor(URI)
    h.open()
    yield h
    h.close()


def _prefix() -> str:
    return f"ut-{uuid.uuid4().hex[:6]}-"


def _cleanup(conn: Any, prefix: str) -> None:
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def _apply(
    store: Store, clock: FakeClock, kind: str, name: str, spec: dict[str, Any], **meta: Any
) -> ObjectKey:
    manifest = Manifest(kind, name, spec, f"{name}.yaml", 1, **meta)
    store.apply(manifest, clock.wall())
    return manifest.key


# -- Domain ---------------------------------------------------------------------------------

DOMAIN = {"type": "kvm", "console": "serial", "disks": [], "deletionPolicy": "Delete"}
domain_specs = st.fixed_dictionaries(
    {
        "vcpus": st.sampled_from([1, 2]),
        "memory": st.sampled_from(["64Mi", "128Mi"]),
        "runStrategy": st.sampled_from(["Always", "Halted", "Manual"]),
        "autostart": st.booleans(),
    }
)


@EXAMPLES
@given(
    before=st.one_of(st.none(), st.just("by-hand"), domain_specs),
    hand=st.sampled_from(["nothing", "destroy", "suspend", "autostart"]),
    adopt=st.booleans(),
    desired=domain_specs,
    deleting=st.booleans(),
)
def test_domain_plan_is_what_the_reconcile_does(
    conn: Any,
    hv: Hypervisor,
    before: dict[str, Any] | str | None,
    hand: str,
    adopt: bool,
    desired: dict[str, Any],
    deleting: bool,
) -> None:
    prefix = _prefix()
    name = prefix + "d"
    store, clock, acted = stores.open(":memory:"), FakeClock(wall=T0), Acted()
    reconciler = DomainReconciler(store, hv, clock, stop_grace=0, on_step=acted)
    try:
        if before == "by-hand":
            conn.defineXML(
                f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
                "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
            ).create()
        elif isinstance(before, dict):
            reconciler.reconcile(_apply(store, clock, "Domain", name, DOMAIN | before))
        if before is not None:
            dom = conn.lookupByName(name)
            if hand == "destroy" and dom.isActive():
                dom.destroy()
            elif hand == "suspend" and dom.isActive():
                dom.suspend()
            elif hand == "autostart":
                dom.setAutostart(0 if dom.autostart() else 1)
        annotations = {"kvmrec.io/adopt": "true"} if adopt else {}
        clock.advance(1)
        key = _apply(store, clock, "Domain", name, DOMAIN | desired, annotations=annotations)
        if deleting:
            store.mark_deleting(key, clock.wall())
        check(reconciler, acted, store, key)
    finally:
        _cleanup(conn, prefix)
        store.close()


# -- Snapshot -------------------------------------------------------------------------------


def _guest(conn: Any, name: str, running: bool) -> None:
    dom = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    if running:
        dom.create()


@EXAMPLES
@given(
    domain=st.sampled_from(["missing", "running", "shutoff"]),
    taken=st.booleans(),
    keep=st.booleans(),
    deleting=st.booleans(),
)
def test_snapshot_plan_is_what_the_reconcile_does(
    conn: Any, hv: Hypervisor, domain: str, taken: bool, keep: bool, deleting: bool
) -> None:
    prefix = _prefix()
    dom = prefix + "d"
    store, clock, acted = stores.open(":memory:"), FakeClock(wall=T0), Acted()
    reconciler = SnapshotReconciler(store, hv, clock, on_step=acted)
    spec = {"domain": dom, "deletionPolicy": "Retain" if keep else "Delete", "memory": True}
    try:
        if domain != "missing":
            _guest(conn, dom, domain == "running")
        key = _apply(store, clock, "Snapshot", prefix + "s", spec)
        if taken and domain != "missing":
            reconciler.reconcile(key)
        clock.advance(1)
        if deleting:
            store.mark_deleting(key, clock.wall())
        check(reconciler, acted, store, key)
    finally:
        _cleanup(conn, prefix)
        store.close()


# -- SnapshotPolicy -------------------------------------------------------------------------


@EXAMPLES
@given(
    domains=st.lists(st.sampled_from(["missing", "running", "shutoff"]), min_size=1, max_size=2),
    rounds=st.integers(0, 4),
    keep_last=st.integers(1, 3),
    later=st.sampled_from([0.0, 0.5, 2.0, 7.0]),
    by_hand=st.booleans(),
)
def test_snapshot_policy_plan_is_what_the_reconcile_does(
    conn: Any,
    hv: Hypervisor,
    domains: list[str],
    rounds: int,
    keep_last: int,
    later: float,
    by_hand: bool,
) -> None:
    prefix = _prefix()
    names = [f"{prefix}d{i}" for i in range(len(domains))]
    store, clock, acted = stores.open(":memory:"), FakeClock(wall=T0), Acted()
    reconciler = SnapshotPolicyReconciler(store, hv, clock, on_step=acted)
    try:
        for name, state in zip(names, domains, strict=True):
            if state != "missing":
                _guest(conn, name, state == "running")
        spec = {
            "domains": names,
            "every": "2s",
            "retention": {"keepLast": keep_last},
            "memory": True,
        }
        key = _apply(store, clock, "SnapshotPolicy", prefix + "p", spec)
        for _ in range(rounds):
            reconciler.reconcile(key)
            clock.advance(2)
        clock.advance(later)
        existing = [n for n, s in zip(names, domains, strict=True) if s != "missing"]
        if by_hand and existing:
            dom = conn.lookupByName(existing[0])
            snapshots = dom.listAllSnapshots(0)
            if snapshots:
                snapshots[0].delete(0)  # deleted by hand: its record is stale
        check(reconciler, acted, store, key)
    finally:
        _cleanup(conn, prefix)
        store.close()
