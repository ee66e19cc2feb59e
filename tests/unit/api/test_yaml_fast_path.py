"""libyaml's events composed under the same bounds: the fast loader and the pure-Python one
load the same documents with the same lines, and refuse the same files at the same line."""

from __future__ import annotations

from typing import Any

import pytest

from kvmrec.api import yaml_loading
from kvmrec.api.yaml_loading import MAX_DEPTH, MAX_DOCUMENTS, _BoundedLoader, _load, _load_with

HEAD = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: d\nspec:\n"

TEXTS = {
    "plain": HEAD + "  memory: 64Mi\n  disks:\n  - source: /x.qcow2\n    bus: virtio\n",
    "flow": HEAD + "  os: {boot: [hd, cdrom]}\n  memory: '64Mi'\n",
    "documents": HEAD + "  memory: 64Mi\n---\n---\n" + HEAD + "  memory: 1Gi\n",
    "modest aliases": HEAD + "  a: &s {x: 1}\n  b: *s\n  c:\n    <<: *s\n    y: 2\n",
    "bomb": HEAD
    + "  l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n"
    + "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9)),
    "recursive": HEAD + "  a: &a [1, *a]\n",
    "deep": HEAD + "  x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n",
    "deep block": HEAD + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(MAX_DEPTH + 5)),
    "duplicate key": HEAD + "  memory: 64Mi\n  memory: 1Gi\n",
    "documents over": "---\n" * (MAX_DOCUMENTS + 2),
}


def outcome(load: Any) -> Any:
    try:
        return ("ok", load())
    except (yaml_loading._Refused, yaml_loading._DuplicateKey) as exc:
        return (type(exc).__name__, str(exc), exc.line, exc.document)


@pytest.mark.skipif(yaml_loading._CParser is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize("name", sorted(TEXTS))
def test_the_fast_loader_agrees_with_the_pure_python_one(name: str) -> None:
    text = TEXTS[name]
    fast = outcome(lambda: _load_with(yaml_loading._FastBoundedLoader(text)))
    assert fast == outcome(lambda: _load_with(_BoundedLoader(text)))
    assert outcome(lambda: _load(text)) == fast


def test_invalid_yaml_is_told_in_the_pure_python_parsers_words() -> None:
    import yaml

    text = HEAD + "  os: {boot: [hd, cdrom}\n"
    with pytest.raises(yaml.MarkedYAMLError) as slow:
        _load_with(_BoundedLoader(text))
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        _load(text)
    assert str(caught.value) == str(slow.value)


def test_only_a_text_that_cannot_reach_a_bound_is_composed_by_libyaml() -> None:
    within = yaml_loading._within_bounds
    assert within(TEXTS["plain"]) and within(TEXTS["flow"]) and within(TEXTS["documents"])
    for name in ("modest aliases", "bomb", "recursive", "deep", "deep block", "documents over"):
        assert not within(TEXTS[name]), name
    # An anchor or alias in a quoted scalar would be harmless; it is refused all the same.
    assert not within(HEAD + "  memory: '64Mi &x'\n")
    assert not within(HEAD + "  x: [" + "0," * yaml_loading._SHORT + "0]\n")
    assert not within(HEAD + "".join(f"  k{i}: 1\n" for i in range(MAX_DEPTH)))


@pytest.mark.skipif(yaml_loading._CParser is None, reason="PyYAML without libyaml")
@pytest.mark.parametrize(
    "text",
    [
        TEXTS["plain"],
        TEXTS["flow"],
        TEXTS["documents"],
        TEXTS["duplicate key"],
        HEAD + "  a: [x: 1, {y: [2, 3]}]\n  ? b\n  : c\n  t: 2026-12-01\n  n: ~\n  e:\n",
        HEAD + "  -\n",
        # Every scalar PyYAML types, built by its constructor inside plain mappings/lists.
        HEAD + "  i: [1, 0x1f, 0o17, 1_000, -3, 1:30]\n  f: [1.5, .inf, -.NaN, 1e3]\n"
        "  b: [yes, No, true, off]\n  z: [null, ~, '']\n  q: ['1', \"2\", !!str 3]\n",
        HEAD + "  m:\n    <<: {x: 1, y: 2}\n    y: 3\n  k: {1: one, null: none, [a]: b}\n",
        HEAD + "  bin: !!binary aGVsbG8=\n  s: !!set {a, b}\n  o: !!omap [{a: 1}]\n",
        HEAD + "  x: !custom 1\n",
    ],
)
def test_libyaml_composes_what_the_bounded_composer_does(text: str) -> None:
    import yaml

    def told(load: Any) -> Any:
        try:
            return outcome(load)
        except yaml.YAMLError as exc:
            return ("invalid", str(exc))

    assert yaml_loading._within_bounds(text)
    assert told(lambda: _load(text)) == told(lambda: _load_with(_BoundedLoader(text)))
    # The plain builder itself, before any fallback, where PyYAML's builds the same.
    if told(lambda: _load_with(yaml.CSafeLoader(text)))[0] == "ok":
        assert told(lambda: _load_with(yaml.CSafeLoader(text), plain=True)) == told(
            lambda: _load_with(yaml.CSafeLoader(text))
        )
