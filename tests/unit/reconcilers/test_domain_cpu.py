"""A Domain whose CPU the host refuses: a CpuNotSupported condition and a slow retry, never a
crash loop; the default CPU's failures stay ordinary ones. On libvirt's test driver, with a
Hypervisor that refuses starts the way libvirt words a CPU the host lacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testdriver

from kvmrec.api.kinds import DomainSpec, Manifest, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.reconcilers import domain_cpu
from kvmrec.reconcilers.domain import DomainReconciler

REFUSAL = (
    "start domain {name}: the CPU is incompatible with host CPU: Host CPU does not provide "
    "required features: vmx"
)
CPU = {"mode": "custom", "model": "kvm64", "features": [{"name": "vmx", "policy": "require"}]}


class RefusingHost(Hypervisor):
    """The test driver, but a start of a domain whose definition names a CPU with a
    required vmx is refused, as a host without VT-x refuses it."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.starts: list[str] = []

    def start_domain(self, name: str) -> bool:
        self.starts.append(name)
        config = self.get_domain(name)
        assert config is not None
        cpu = config.config.cpu
        if cpu is not None and any(f.name == "vmx" for f in cpu.features):
            raise BackendError(REFUSAL.format(name=name))
        return super().start_domain(name)


class World(testdriver.World):
    reconciler: DomainReconciler
    host: RefusingHost
    generation = 0

    def apply(self, name: str, **spec: Any) -> ObjectKey:
        self.generation += 1
        body = {"memory": "64Mi", "type": "kvm"} | spec
        manifest = Manifest("Domain", name, body, f"{name}.yaml", self.generation)
        self.store.apply(manifest, self.clock.wall())
        return manifest.key


@pytest.fixture
def world(tmp_path: Path, conn: Any) -> Iterator[World]:
    with testdriver.opened(tmp_path, conn) as parts:
        parts.hv.close()
        host = RefusingHost(testdriver.URI)
        host.open()
        w = World(parts.prefix, conn, parts.store, host, parts.clock)
        w.host = host
        w.reconciler = DomainReconciler(parts.store, host, parts.clock, stop_grace=0)
        try:
            yield w
        finally:
            host.close()


def test_a_refused_cpu_is_a_condition_with_libvirts_words_and_a_slow_retry(world: World) -> None:
    name = world.name("cpu")
    key = world.apply(name, cpu=CPU)
    result = world.reconciler.reconcile(key)
    assert result.requeue_after == domain_cpu.RETRY
    status = world.status(key)
    ready = status.condition("Ready")
    assert ready is not None and (ready.status, ready.reason) == ("False", "CpuNotSupported")
    assert "Host CPU does not provide required features: vmx" in ready.message
    assert "spec.cpu mode custom, model kvm64" in ready.message
    assert status.details["cpuRefused"]["generation"] == 1
    assert "lastStart" not in status.details  # a refused start is no start: no crash loop
    assert world.exists(name) and not world.running(name)

    # Events of the failed start, a resync: within the retry nothing starts it again.
    for _ in range(5):
        world.clock.advance(30)
        result = world.reconciler.reconcile(key)
        assert 0 < (result.requeue_after or 0) <= domain_cpu.RETRY
    assert world.host.starts == [name]
    ready = world.status(key).condition("Ready")
    assert ready is not None and ready.reason == "CpuNotSupported"
    assert "CrashLoopBackOff" not in [e.reason for e in world.store.events(key, limit=100)]

    # Once the retry is due it is tried again (and refused again).
    world.clock.advance(domain_cpu.RETRY)
    world.reconciler.reconcile(key)
    assert world.host.starts == [name, name]


def test_a_new_generation_starts_at_once_and_forgets_the_refusal(world: World) -> None:
    name = world.name("cpu")
    key = world.apply(name, cpu=CPU)
    world.reconciler.reconcile(key)
    key = world.apply(name, cpu={"mode": "custom", "model": "kvm64"})
    world.clock.advance(1)
    world.reconciler.reconcile(key)
    assert world.running(name)
    status = world.status(key)
    assert status.is_true("Ready") and "cpuRefused" not in status.details
    assert world.config(name).cpu is not None and world.config(name).cpu.model == "kvm64"  # type: ignore[union-attr]


def test_only_a_named_cpu_makes_a_refused_start_cpu_not_supported() -> None:
    error = BackendError(REFUSAL.format(name="d"))
    plain = DomainSpec.from_spec({"memory": "64Mi"}, "d")
    named = DomainSpec.from_spec({"memory": "64Mi", "cpu": CPU}, "d")
    assert not domain_cpu.refused(plain, error)  # the default CPU: an ordinary failure
    assert domain_cpu.refused(named, error)
    assert not domain_cpu.refused(named, BackendError("start domain d: No such file"))


def test_a_cpu_change_of_a_running_guest_needs_a_restart(world: World) -> None:
    name = world.name("cpu")
    key = world.apply(name, cpu={"mode": "custom", "model": "kvm64"})
    world.reconciler.reconcile(key)
    assert world.running(name)
    key = world.apply(name, cpu={"mode": "host-passthrough"})
    world.clock.advance(1)
    world.reconciler.reconcile(key)
    status = world.status(key)
    restart = status.condition("RestartRequired")
    assert restart is not None and restart.status == "True" and "spec.cpu" in restart.message
    assert world.config(name).cpu is not None and world.config(name).cpu.mode == "host-passthrough"  # type: ignore[union-attr]


def test_a_restart_into_a_refused_cpu_ends_in_the_condition_not_a_loop(world: World) -> None:
    name = world.name("cpu")
    key = world.apply(name, cpu={"mode": "custom", "model": "kvm64"}, restartPolicy="Auto")
    world.reconciler.reconcile(key)
    assert world.running(name)
    key = world.apply(name, cpu=CPU, restartPolicy="Auto")
    for _ in range(6):
        world.clock.advance(5)
        world.reconciler.reconcile(key)
    ready = world.status(key).condition("Ready")
    assert ready is not None and ready.reason == "CpuNotSupported"
    assert "required features: vmx" in ready.message
    assert not world.running(name)
    # The first start, the restart's start, and the one start that recorded the refusal.
    assert world.host.starts == [name, name, name]
