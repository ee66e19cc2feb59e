"""Stopping a guest cleanly, on libvirt's ``test:///default`` driver with a stand-in for the
guest's side: who is asked to power off, when it escalates, what is recorded.

The test driver has no guest agent, so these guests are asked by the ACPI power button;
the agent path runs against a real guest in tests/integration/test_guest_agent.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from testdriver import URI, new_prefix, remove_domains

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.backends.libvirt.live import GuestInfo
from kvmrec.engine.clock import FakeClock
from kvmrec.reconcilers.domain import DomainReconciler


class Guest:
    """The guest's side: powers off when asked by a method it ``obeys``."""

    def __init__(self, conn: Any, obeys: set[str]) -> None:
        self.conn = conn
        self.obeys = obeys
        self.asked: list[str] = []

    def shutdown(self, name: str, method: str) -> None:
        self.asked.append(method)
        if method == "refuse":
            raise BackendError("no")
        if method in self.obeys:
            self.conn.lookupByName(name).shutdown()

    def info(self, name: str, *, agent: bool, leases: bool) -> GuestInfo:
        return GuestInfo(agent=False)


class Harness:
    def __init__(self, tmp_path: Path, obeys: set[str], grace: float = 30.0) -> None:
        self.prefix = new_prefix()
        self.conn = libvirt.open(URI)
        self.store = stores.open(tmp_path / "state.db")
        self.hv = Hypervisor(URI)
        self.hv.open()
        self.clock = FakeClock()
        self.guest = Guest(self.conn, obeys)
        self.reconciler = DomainReconciler(
            self.store,
            self.hv,
            self.clock,
            guest=self.guest,
            stop_grace=grace,  # type: ignore[arg-type]
        )
        self.generation = 0

    def apply(self, name: str, **spec: Any) -> ObjectKey:
        manifest = Manifest("Domain", name, {"memory": "64Mi", **spec}, f"{name}.yaml", 1)
        self.store.apply(manifest, self.clock.wall())
        return manifest.key

    def reconcile(self, key: ObjectKey, after: float = 1.0) -> float | None:
        self.clock.advance(after)
        return self.reconciler.reconcile(key).requeue_after

    def state(self, name: str) -> int:
        return int(self.conn.lookupByName(name).state()[0])

    def details(self, key: ObjectKey) -> dict[str, Any]:
        status = self.store.get_status(key)
        return dict(status.details) if status else {}

    def messages(self, key: ObjectKey) -> list[str]:
        return [e.message for e in self.store.events(key)]

    def close(self) -> None:
        remove_domains(self.conn, self.prefix)
        self.hv.close()
        self.store.close()
        self.conn.close()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(obeys: set[str], grace: float = 30.0) -> Harness:
        home = tmp_path / str(len(made))
        home.mkdir()
        made.append(Harness(home, obeys, grace))
        return made[-1]

    yield factory
    for h in made:
        h.close()


def test_a_guest_that_obeys_the_power_button_is_not_destroyed(make: Any) -> None:
    h = make({"acpi"})
    name = h.prefix + "a"
    key = h.apply(name)
    h.reconcile(key)
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING

    h.apply(name, runStrategy="Halted")
    wait = h.reconcile(key)
    assert h.guest.asked == ["acpi"]
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    assert wait is not None  # the stop is finished by the next reconcile (or the event)
    h.reconcile(key)
    details = h.details(key)
    assert details["lastStop"]["method"] == "acpi" and "stopping" not in details
    assert any("powered off by the ACPI power button" in m for m in h.messages(key))
    assert h.reconcile(key) is None  # converged: nothing more to do


def test_a_guest_that_ignores_every_request_is_destroyed_after_the_grace_period(
    make: Any,
) -> None:
    h = make(set(), grace=30)
    name = h.prefix + "b"
    key = h.apply(name)
    h.reconcile(key)
    h.apply(name, runStrategy="Halted")

    wait = h.reconcile(key)
    assert h.guest.asked == ["acpi"]
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    assert wait == pytest.approx(30, abs=0.5)  # next: the end of the grace period
    assert h.reconcile(key, after=10) == pytest.approx(20, abs=0.5)  # still waiting
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    ready = h.store.get_status(key).condition("Ready")  # type: ignore[union-attr]
    assert ready is not None and (ready.status, ready.reason) == ("False", "Stopping")
    assert "asked by the ACPI power button; destroyed in 20s" in ready.message

    h.reconcile(key, after=20)
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    assert h.details(key)["lastStop"]["method"] == "destroy"
    assert h.guest.asked == ["acpi"]  # asked once, not on every reconcile
    assert any("did not power off within the 30s grace period" in m for m in h.messages(key))


def test_the_manifest_overrides_the_grace_period_and_zero_destroys_at_once(make: Any) -> None:
    h = make({"acpi"}, grace=30)
    name = h.prefix + "c"
    key = h.apply(name, terminationGracePeriodSeconds=0)
    h.reconcile(key)
    h.apply(name, runStrategy="Halted", terminationGracePeriodSeconds=0)
    h.reconcile(key)
    assert h.guest.asked == []
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    assert h.details(key)["lastStop"]["method"] == "destroy"


def test_a_stop_called_off_by_the_manifest_is_forgotten(make: Any) -> None:
    h = make(set(), grace=30)
    name = h.prefix + "d"
    key = h.apply(name)
    h.reconcile(key)
    h.apply(name, runStrategy="Halted")
    h.reconcile(key)
    assert "stopping" in h.details(key)

    h.apply(name, runStrategy="Always")
    h.reconcile(key, after=60)
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    assert "stopping" not in h.details(key)


def test_deletion_waits_for_the_guest_to_power_off(make: Any) -> None:
    h = make(set(), grace=20)
    name = h.prefix + "e"
    key = h.apply(name)
    h.reconcile(key)
    h.store.mark_deleting(key, h.clock.wall())

    wait = h.reconcile(key)
    assert wait == pytest.approx(20, abs=0.5)
    assert h.store.get(key) is not None and h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    status = h.store.get_status(key)
    assert status is not None and status.condition("Synced").reason == "Stopping"  # type: ignore[union-attr]

    h.reconcile(key, after=20)
    assert h.store.get(key) is None
    assert name not in {d.name() for d in h.conn.listAllDomains(0)}


def test_a_restart_for_a_change_powers_off_cleanly_then_starts_again(make: Any) -> None:
    h = make({"acpi"}, grace=30)
    name = h.prefix + "f"
    key = h.apply(name, restartPolicy="Auto", runStrategy="RerunOnFailure")
    h.reconcile(key)
    h.apply(name, restartPolicy="Auto", runStrategy="RerunOnFailure", vcpus=2)

    h.reconcile(key)
    assert h.guest.asked == ["acpi"]
    # Off by the guest's own shutdown, which RerunOnFailure would leave off: a restart
    # starts it again all the same.
    assert h.state(name) == libvirt.VIR_DOMAIN_SHUTOFF
    h.reconcile(key)
    assert h.state(name) == libvirt.VIR_DOMAIN_RUNNING
    details = h.details(key)
    assert details["lastStop"]["method"] == "acpi" and "restarting" not in details
    assert details["quickFailures"] == 0  # kvmrec's own restart is no crash
    running = h.conn.lookupByName(name)
    assert running.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
