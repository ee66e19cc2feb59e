"""What a Domain's spec asks of its host: its memory in bytes and its vCPUs.

The one reading of ``spec.memory`` and ``spec.vcpus`` (defaults included) that the Domain's
model (kinds.py) is built with and that ``kvmrec hosts`` sums per host, without loading
the kinds' models: a read-only command answers in a blink.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvmrec.api import quantities


def memory(spec: Mapping[str, Any]) -> int:
    """Bytes of ``spec.memory`` (a quantity such as ``1Gi``)."""
    return quantities.parse_bytes(spec["memory"])


def vcpus(spec: Mapping[str, Any]) -> int:
    """``spec.vcpus``, 1 when not given."""
    return int(spec.get("vcpus", 1))
