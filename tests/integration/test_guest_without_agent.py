"""``kvmrec guest`` on guests whose agent cannot answer: OS-less, diskless KVM guests, one
with the agent channel (nothing inside listens on it), one without."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from realstack import Controller, domain_manifest, state_of

pytestmark = pytest.mark.integration


def _converge(controller: Controller, name: str, **spec: Any) -> None:
    controller.write(
        f"{name}.yaml", domain_manifest(name, controller.stack["KVMREC_DOMAIN_TYPE"], **spec)
    )
    done = subprocess.run(
        controller.command(
            "run",
            "--once",
            "--timeout",
            "60",
            "--manifests",
            str(controller.manifests),
            "--state",
            str(controller.state),
        ),
        capture_output=True,
        text=True,
        env=controller.env(),
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ping_of_a_guest_whose_agent_does_not_answer_fails_with_a_message(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-ping"
    _converge(controller, name, guestAgent=True)
    assert state_of(conn, name) == "running"

    ping = controller.cli("guest", name, "ping")
    assert ping.returncode == 1, ping.stdout + ping.stderr
    assert "Traceback" not in ping.stderr
    # The service converged and stopped: its state being unserved is a warning of its own.
    said = [line for line in ping.stderr.splitlines() if ": warning: no kvmrec service" not in line]
    assert len(said) == 1 and said[0].startswith("kvmrec guest ping: "), ping.stderr
    assert "does not answer" in said[0] and name in said[0]

    info = controller.cli("guest", name, "info")
    assert "Traceback" not in info.stderr
    assert info.returncode == 0 and "agent:    does not answer" in info.stdout


def test_info_of_a_guest_without_the_agent_channel_fails_with_the_reason(
    controller: Controller, conn: Any, prefix: str
) -> None:
    name = f"{prefix}-noag"
    _converge(controller, name)
    assert state_of(conn, name) == "running"

    for output in ("table", "json"):
        info = controller.cli("guest", name, "info", "-o", output)
        assert info.returncode == 1, info.stdout + info.stderr
        assert info.stdout == ""
        assert "no guest agent channel" in info.stderr and "spec.guestAgent" in info.stderr
        assert "Traceback" not in info.stderr
    ping = controller.cli("guest", name, "ping")
    assert ping.returncode == 1 and "Traceback" not in ping.stderr
