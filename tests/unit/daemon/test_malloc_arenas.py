"""The service caps glibc's malloc arenas (kvmrec/malloc_arenas.py)."""

from __future__ import annotations

import platform

import pytest

from kvmrec import malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_cap() -> None:
    assert malloc_arenas.limit() is True


def test_no_c_library_to_cap_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        malloc_arenas.ctypes.util, "find_library", lambda _name: "libkvmrec-absent.so"
    )
    assert malloc_arenas.limit() is False
