"""The echo of kvmrec's own define and start is dropped; every other event still wakes.

On ``test:///default``: a converge reconciles each new domain once (not a second time for
the DEFINED and STARTED events of its own calls), and a guest destroyed by hand is still
started again at once from its event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from kvmrec.api.kinds import ObjectKey
from kvmrec.backends.libvirt import echoes
from kvmrec.backends.libvirt.echoes import DEFINED, STARTED, Echoes
from kvmrec.service import Service
from kvmrec.settings import Settings

URI = "test:///default"


def test_an_expected_event_is_dropped_once() -> None:
    seen = Echoes()
    seen.expect("a", STARTED)
    assert not seen.is_echo("a", DEFINED)  # another kind of event
    assert not seen.is_echo("b", STARTED)  # another domain
    assert seen.is_echo("a", STARTED)
    assert not seen.is_echo("a", STARTED)  # a second start is someone else's


def test_a_withdrawn_or_lapsed_expectation_drops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Echoes()
    seen.expect("a", DEFINED)
    seen.withdraw("a", DEFINED)
    assert not seen.is_echo("a", DEFINED)
    monkeypatch.setattr(echoes, "WINDOW", -1.0)  # lapses at once
    seen.expect("a", DEFINED)
    assert not seen.is_echo("a", DEFINED)


def test_without_watched_events_nothing_is_kept() -> None:
    seen = Echoes(enabled=False)
    seen.expect("a", STARTED)
    assert not seen.is_echo("a", STARTED)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    prefix = f"ue-{uuid.uuid4().hex[:8]}-"
    for i in range(3):
        (manifests / f"{prefix}{i}.yaml").write_text(
            "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\n"
            f"metadata:\n  name: {prefix}{i}\nspec:\n  type: kvm\n  memory: 64Mi\n"
        )
    settings = Settings(manifests=manifests, connect=URI, state=tmp_path / "state.db")
    svc = Service(settings)
    svc.prefix = prefix  # type: ignore[attr-defined]
    try:
        yield svc
    finally:
        svc.stop()
        conn = libvirt.open(URI)
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(prefix):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()


def test_a_new_domain_is_reconciled_once_and_a_destroyed_one_is_started_again(
    service: Service,
) -> None:
    prefix: str = service.prefix  # type: ignore[attr-defined]
    service.start(watch=True)
    assert service.converge(timeout=60)
    conn = libvirt.open(URI)
    try:
        conn.lookupByName(f"{prefix}0").destroy()
        # libvirt delivers events in order: once the destroy's event has been acted on, so
        # have the echoes of every define and start before it.
        healed = ObjectKey("Domain", f"{prefix}0")
        deadline = time.monotonic() + 30
        while not (
            conn.lookupByName(f"{prefix}0").isActive()
            and len(service.store.reconciles(healed)) >= 2
        ):
            assert time.monotonic() < deadline, "the destroyed guest was not started again"
            time.sleep(0.01)
        while service.queue.is_busy():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        conn.close()
    for i in (1, 2):
        assert len(service.store.reconciles(ObjectKey("Domain", f"{prefix}{i}"))) == 1
