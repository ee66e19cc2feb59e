"""The compiled schema check says yes only to what the validator accepts.

``validate`` asks the compiled check first and the validator only when it says no, so a
yes from it must never let through what the validator would refuse. Documents are the
reference manifests, then the same with one field anywhere replaced by an arbitrary value
or an unknown field added; each verdict of the check is held to the validator's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmrec.api import schema

REFERENCE = Path(__file__).resolve().parents[3] / "manifests"
DOCUMENTS = [
    doc
    for path in sorted(REFERENCE.rglob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if isinstance(doc, dict) and doc.get("kind") in schema.registry()
]
SNAPSHOT = {
    "apiVersion": schema.API_VERSION,
    "kind": "Snapshot",
    "metadata": {"name": "before-upgrade"},
    "spec": {"domain": "web-1"},
}

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.sampled_from(["", "a", "web-1", "64Mi", "1Gi", "Always", "virtio", "-x", "a" * 300]),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*prefix, i))
    return found


def agree(kind: schema.KindSchema, document: Any) -> None:
    if kind.accepts(document):
        assert list(kind.validator.iter_errors(document)) == [], document


def test_the_reference_manifests_are_accepted_by_both() -> None:
    assert {d["kind"] for d in DOCUMENTS} >= {"Domain", "Network", "OvsBridge", "SnapshotPolicy"}
    for document in [*DOCUMENTS, SNAPSHOT]:
        kind = schema.registry()[document["kind"]]
        assert kind.accepts(document)
        assert list(kind.validator.iter_errors(document)) == []


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_a_changed_field_is_never_accepted_by_the_check_alone(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from([*DOCUMENTS, SNAPSHOT])))
    kind = schema.registry()[document["kind"]]
    path = data.draw(st.sampled_from(paths(document)[1:]))
    *parents, last = path
    node = document
    for step in parents:
        node = node[step]
    if data.draw(st.booleans()):
        node[last] = data.draw(VALUES)
    elif isinstance(node[last], dict):
        node[last][data.draw(st.text(max_size=8))] = data.draw(VALUES)
    else:
        node[last] = data.draw(VALUES)
    agree(kind, document)


def test_the_check_fills_in_no_defaults() -> None:
    document = copy.deepcopy(SNAPSHOT)
    schema.registry()["Snapshot"].accepts(document)
    assert document == SNAPSHOT
