"""What the benchmarks share: removing the guests they made, by name prefix."""

from __future__ import annotations

from typing import Any


def remove_guests(conn: Any, prefix: str) -> None:
    """Destroy and undefine every domain whose name starts with ``prefix``."""
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
