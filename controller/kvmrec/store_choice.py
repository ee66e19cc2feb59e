"""Which store a command uses: ``--store URL`` or ``--state FILE``, wherever each is set.

Both say where the desired state and the status are kept, so they are settled together,
level by level, strongest first: the command line, the environment (``$KVMREC_STORE``,
``$KVMREC_STATE``), the configuration file. The strongest level that sets either decides;
a level that sets both is an error, since which one was meant is a guess. A store that is
a sqlite file (a path or ``sqlite:///PATH``) becomes the ``state``, so the state lock, the
reload record and the "no service runs on it" warning all look at that one file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Level", "choose"]


@dataclass(frozen=True)
class Level:
    """What one level sets of ``store`` and ``state`` (only the keys it sets)."""

    both: str
    """How the two are named at this level, for the error when both are set."""
    values: Mapping[str, Any]
    base: Path | None = None
    """The directory a relative sqlite path given as a store is relative to (a file's)."""


def choose(levels: Sequence[Level]) -> dict[str, Any]:
    """The ``store`` and ``state`` settings the strongest level that sets either makes
    (empty when none does); raises ValueError when a level sets both."""
    from kvmrec import store as stores  # reads nothing; only when a level is looked at

    for level in levels:
        store = level.values.get("store")
        if store is not None and level.values.get("state") is not None:
            raise ValueError(
                f"{level.both} are both set: give one (the store is a URL, the state a "
                "sqlite file; --store PATH is the same as --state PATH)"
            )
        if store is not None:
            path = stores.state_file(store)
            if path is None:
                return {"store": store}
            path = path.expanduser()
            if level.base is not None:
                path = level.base / path
            return {"store": None, "state": path}
        if level.values.get("state") is not None:
            return {"store": None}
    return {}
