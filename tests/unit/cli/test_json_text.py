"""The fast indented JSON writer gives the standard library's text to the byte."""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kvmrec.cli import json_text


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


VALUES: list[Any] = [
    {},
    [],
    "plain",
    'ünïcödé \u2603 "quoted" \\ \n\t\x01',
    0,
    -12,
    3.5,
    float("inf"),
    1e300,
    True,
    None,
    {"a": [], "b": {}, "c": [1, [2, [3, {}]]], "d": (1, "two")},
    {"when": datetime(2026, 12, 1, tzinfo=UTC), "colour": Colour.RED, "level": Level.HIGH},
    {"objects": [{"kind": "Domain", "conditions": [{"type": "Ready", "status": "True"}]}]},
    {1: "an int key", None: "a null key"},
    [{"nested": {"deeper": {"deepest": ["x", None, False]}}}],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_text_is_the_standard_librarys(value: Any) -> None:
    assert json_text.dumps(value) == json.dumps(value, indent=2, default=str)
