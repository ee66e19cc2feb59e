"""Fixtures of the reconciler tests (what they share besides is in testdriver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from testdriver import URI


@pytest.fixture
def conn() -> Iterator[Any]:
    """A plain libvirt connection, for doing things "by hand" and looking at the result."""
    c = libvirt.open(URI)
    yield c
    c.close()
