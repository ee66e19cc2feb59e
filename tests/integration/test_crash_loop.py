"""Crash-loop backoff on the real stack: a guest destroyed by hand again and again.

The first stop is healed at once; each further stop within a minute of the last start waits
longer, and the Ready condition says why, for how long, and when that resets.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from realstack import Controller, domain_manifest, state_of, wait_for

pytestmark = pytest.mark.integration


def _ready(controller: Controller, name: str) -> dict[str, Any]:
    obj = controller.object(name) or {}
    return next((c for c in obj.get("conditions", []) if c["type"] == "Ready"), {})


def _backoff_messages(controller: Controller, name: str) -> list[str]:
    done = controller.cli("events", f"Domain/{name}", "-o", "json")
    events = json.loads(done.stdout)["events"] if done.returncode == 0 else []
    return [e["message"] for e in events if e["reason"] == "CrashLoopBackOff"]


def test_a_guest_destroyed_again_and_again_says_why_it_waits_and_how_long(
    controller: Controller, conn: Any, prefix: str, stack: dict[str, str]
) -> None:
    name = f"{prefix}-crashy"
    manifest = domain_manifest(name, stack["KVMREC_DOMAIN_TYPE"], runStrategy="Always")
    controller.write("crashy.yaml", manifest)
    controller.start(resync=300)

    def started() -> str | None:
        """When kvmrec last started the guest, once its status says the start is done:
        libvirt says "running" while a start is still under way, and a destroy in its
        midst kills QEMU mid-start (a failed start, not a stop of a running guest)."""
        body = controller.object(name) or {}
        details = body.get("details", {})
        done = body.get("ready") and details.get("state") == "running"
        return details.get("lastStart") if done and state_of(conn, name) == "running" else None

    last = wait_for(started, 30, "first start")

    def destroy_after_restart(previous: str) -> str:
        conn.lookupByName(name).destroy()
        again: str = wait_for(
            lambda: (now := started()) not in (None, previous) and now, 30, "started again"
        )
        return again

    last = destroy_after_restart(last)  # the first stop: healed at once, no backoff
    assert _backoff_messages(controller, name) == []

    destroy_after_restart(last)  # the second in a row waits a second
    messages = wait_for(lambda: _backoff_messages(controller, name), 10, "a backoff event")
    assert "stopped 2 times in a row within 60 s of its start; next start in 1 s" in messages[0]

    conn.lookupByName(name).destroy()  # the third waits four: seen in the condition itself
    ready = wait_for(
        lambda: (
            (r := _ready(controller, name)).get("reason") == "CrashLoopBackOff"
            and "3 times" in r["message"]
            and r
        ),
        10,
        "Ready=False (CrashLoopBackOff) after the third stop",
    )
    assert ready["status"] == "False"
    message = ready["message"]
    assert "the guest stopped 3 times in a row within 60 s of its start" in message
    assert "next start in 4 s" in message
    assert "1, 4, 9, 16 s ... up to 300 s" in message
    assert "it resets once the guest has run for 60 s" in message
    wait_for(lambda: state_of(conn, name) == "running", 30, "started after the wait")
    wait_for(lambda: _ready(controller, name).get("reason") == "Running", 10, "Ready again")
