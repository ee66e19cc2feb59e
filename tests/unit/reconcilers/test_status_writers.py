"""Only the generic reconcile layer writes status and events; the kinds return them.

import-linter can say which modules a module imports, not which methods it calls, so this
reads the source: no module of ``kvmrec.reconcilers`` but the generic layer (and the record
of a revert by hand, which ``kvmrec snapshot revert`` writes, not a reconcile) calls the
store's status or event writers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kvmrec.reconcilers

WRITERS = {"put_status", "record", "add_event", "commit"}
ALLOWED = {
    "reconciling.py",  # the generic layer
    "recording.py",  # its helpers: commit, failures_recorded
    "reverts.py",  # a revert by hand, recorded by the CLI command that made it
}


def _writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in WRITERS
        ):
            found.append(f"{path.name}:{node.lineno}: .{node.func.attr}(...)")
    return found


def test_only_the_generic_layer_writes_status_and_events() -> None:
    package = Path(kvmrec.reconcilers.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert any(m.name == "network.py" for m in modules)
    offenders = [w for m in modules if m.name not in ALLOWED for w in _writes(m)]
    assert offenders == []


def test_the_check_sees_a_write(tmp_path: Path) -> None:
    module = tmp_path / "kind.py"
    module.write_text("def f(store, key, s, now):\n    store.record(key, s, [], now)\n")
    assert _writes(module) == ["kind.py:2: .record(...)"]
