"""The venv's ovs library parses OVSDB's JSON in C where Debian's compiled parser is there
(scripts/ovs-c-json.sh), and the C parser reads what the Python one reads."""

from __future__ import annotations

import importlib.machinery
import json
from pathlib import Path

import ovs.json
import pytest

DEBIAN = Path("/usr/lib/python3/dist-packages/ovs") / (
    "_json" + importlib.machinery.EXTENSION_SUFFIXES[0]
)


@pytest.mark.skipif(not DEBIAN.exists(), reason="no python3-openvswitch for this Python")
def test_the_c_parser_is_used_and_reads_what_the_python_one_reads() -> None:
    assert ovs.json.PARSER == ovs.json.PARSER_C
    reply = {
        "id": 7,
        "error": None,
        "result": {
            "Bridge": {
                "3f2c": {"new": {"name": "br-é", "ports": ["set", []], "mtu": 1.5, "up": True}}
            },
            "numbers": [0, -1, 2**40],
        },
    }
    text = json.dumps(reply)
    assert ovs.json.from_string(text) == reply
    ovs.json.PARSER = ovs.json.PARSER_PY
    try:
        assert ovs.json.from_string(text) == reply
    finally:
        ovs.json.PARSER = ovs.json.PARSER_C
