"""kvmrec prune: the mass deletion the guard refused, approved once for exactly its set,
carried out by the running service without a restart."""

from __future__ import annotations

from typing import Any

import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

pytestmark = pytest.mark.integration


def guard_message(ctl: Controller) -> str:
    errors = ctl.status()[1].get("errors") or []
    return next((e["message"] for e in errors if "refusing to delete" in e["message"]), "")


def prune(ctl: Controller, *args: str, stdin: str | None = None) -> Any:
    return ctl.cli("prune", "--manifests", str(ctl.manifests), *args, stdin=stdin)


def test_prune_approves_exactly_the_refused_deletions(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    names = {letter: f"{prefix}-p{letter}" for letter in "abcde"}
    for name in names.values():
        controller.write(
            f"{name}.yaml",
            domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"], runStrategy="Halted"),
        )
    controller.start()
    for name in names.values():
        wait_for(lambda n=name: state_of(conn, n) == "shutoff", 30, f"{name} defined")

    for letter in "abc":
        controller.remove(f"{names[letter]}.yaml")
    wait_for(lambda: "3 of 5" in guard_message(controller), 15, "the guard refusing 3 of 5")

    # Approved while no service runs; then the set changes before one runs again.
    controller.stop()
    approved = prune(controller, "--yes")
    assert approved.returncode == 0, approved.stderr
    assert all(names[letter] in approved.stdout for letter in "abc"), approved.stdout
    assert names["d"] not in approved.stdout
    controller.remove(f"{names['d']}.yaml")
    controller.start()
    wait_for(lambda: "4 of 5" in guard_message(controller), 30, "the guard refusing 4 of 5")
    assert all(state_of(conn, name) == "shutoff" for name in names.values())

    # No terminal and no --yes: refused, whatever stdin says.
    asked = prune(controller, stdin="yes\n")
    assert asked.returncode == 1 and "give --yes" in asked.stderr, asked.stderr
    assert all(state_of(conn, name) == "shutoff" for name in names.values())

    approved = prune(controller, "--yes")
    assert approved.returncode == 0, approved.stderr
    assert all(names[letter] in approved.stdout for letter in "abcd"), approved.stdout
    for letter in "abcd":
        wait_for(lambda n=names[letter]: state_of(conn, n) is None, 30, f"{letter} deleted")
    wait_for(lambda: not guard_message(controller), 15, "the guard's report cleared")
    assert state_of(conn, names["e"]) == "shutoff"
    assert [o["name"] for o in controller.status()[1]["objects"]] == [names["e"]]
    told = controller.cli("events", f"Domain/{names['d']}")
    assert "DeletionApproved" in told.stdout and "approved with kvmrec prune" in told.stdout

    # Used up: nothing is held back any more, and nothing more is deleted.
    again = prune(controller, "--yes")
    assert again.returncode == 0 and "nothing is held back" in again.stdout, again.stdout
