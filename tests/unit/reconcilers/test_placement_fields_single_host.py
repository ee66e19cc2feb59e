"""A Domain's placement fields on a single host: not libvirt state, so never planned or drift.

``spec.host`` and ``spec.hostSelector`` say where a Domain goes in a fleet; the one host of
``kvmrec run --manifests`` runs every Domain it is given whatever they say. On libvirt's
in-process ``test:///default`` (names ``ut-<random>-...``, removed by testdriver.opened).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import testdriver
import yaml

from kvmrec.api import manifests
from kvmrec.api.kinds import ObjectKey
from kvmrec.reconcilers.domain import DomainReconciler

PLACEMENTS = [
    pytest.param({"host": "lab2"}, id="pinned"),
    pytest.param({"hostSelector": {"matchLabels": {"zone": "b"}}}, id="selector"),
]


def apply(parts: testdriver.Parts, name: str, **spec: Any) -> ObjectKey:
    document = {
        "apiVersion": "kvmrec.io/v1alpha1",
        "kind": "Domain",
        "metadata": {"name": name},
        "spec": {"type": "qemu", "memory": "64Mi", "runStrategy": "Always"} | spec,
    }
    (manifest,) = manifests.parse_file(f"{name}.yaml", yaml.safe_dump(document).encode())
    parts.store.apply(manifest, parts.clock.wall())
    return manifest.key


@pytest.fixture
def parts(tmp_path: Path, conn: Any) -> Iterator[testdriver.Parts]:
    with testdriver.opened(tmp_path, conn) as opened:
        yield opened


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_new_domain_plans_the_same_with_or_without_placement(
    parts: testdriver.Parts, placement: dict[str, Any]
) -> None:
    reconciler = DomainReconciler(parts.store, parts.hv, parts.clock, stop_grace=0)
    key = apply(parts, parts.prefix + "web", **placement)
    obj = parts.store.get(key)
    assert obj is not None
    plain = replace(obj, spec={k: v for k, v in obj.spec.items() if k not in placement})
    planned = reconciler.plan(obj).visible
    assert [s.action for s in planned] == ["create", "start"]
    assert planned == reconciler.plan(plain).visible


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_placement_added_to_a_converged_domain_plans_nothing_and_is_no_drift(
    parts: testdriver.Parts, placement: dict[str, Any]
) -> None:
    reconciler = DomainReconciler(parts.store, parts.hv, parts.clock, stop_grace=0)
    name = parts.prefix + "web"
    key = apply(parts, name)
    reconciler.reconcile(key)
    apply(parts, name, **placement)
    obj = parts.store.get(key)
    assert obj is not None and obj.generation == 2
    assert reconciler.plan(obj).visible == []
    parts.clock.advance(1)
    reconciler.reconcile(key)
    status = parts.store.get_status(key)
    assert status is not None and status.drift == ()
    assert status.is_true("Ready") and status.is_true("Synced")
    assert status.observed_generation == 2
