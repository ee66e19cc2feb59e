"""``kvmrec plan -f FILE_OR_DIR`` as an operator runs it, beside a running service on
qemu:///system: the plan of candidate manifests before they go into the manifest directory,
laid over it, and nothing applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from realstack import Controller, domain_manifest, plan, plan_text, state_of, wait_for

pytestmark = pytest.mark.integration


def changes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["name"], c["action"]) for c in body["changes"]]


@pytest.fixture
def served(controller: Controller, conn: Any, prefix: str) -> Controller:
    """The service running on a directory holding one halted domain, converged."""
    kind = controller.stack["KVMREC_DOMAIN_TYPE"]
    controller.write("a.yaml", domain_manifest(f"{prefix}-a", kind, runStrategy="Halted"))
    controller.start()
    wait_for(lambda: (o := controller.object(f"{prefix}-a")) and o["synced"], 20, "a synced")
    return controller


def test_plan_f_shows_a_new_file_without_deleting_the_rest_and_applies_nothing(
    served: Controller, conn: Any, prefix: str
) -> None:
    kind = served.stack["KVMREC_DOMAIN_TYPE"]
    candidate = served.root / "drafts" / "b.yaml"
    candidate.parent.mkdir()
    candidate.write_text(domain_manifest(f"{prefix}-b", kind, runStrategy="Halted"))

    code, body = plan(served, "-f", str(candidate))
    assert code == 2, body
    assert changes(body) == [(f"{prefix}-b", "create")], "a.yaml stays: nothing deleted"
    assert body["errors"] == []
    done = plan_text(served, "-f", str(candidate))
    assert done.returncode == 2
    [row] = done.stdout.splitlines()[1:]
    assert row.split()[:3] == ["Domain", f"{prefix}-b", "create"]

    # The same name as a file of the directory replaces it: what it drops is deleted.
    replacing = served.root / "drafts" / "a.yaml"
    replacing.write_text(domain_manifest(f"{prefix}-c", kind, runStrategy="Halted"))
    code, body = plan(served, "-f", str(replacing))
    assert (code, sorted(changes(body))) == (
        2,
        [(f"{prefix}-a", "delete"), (f"{prefix}-c", "create")],
    )

    # An edit of a file of the directory shows field by field; an unchanged one is nothing.
    replacing.write_text(domain_manifest(f"{prefix}-a", kind, runStrategy="Halted", vcpus=2))
    code, body = plan(served, "-f", str(replacing))
    assert (code, changes(body)) == (2, [(f"{prefix}-a", "update")])
    assert {"field": "spec.vcpus", "desired": 2, "actual": 1} in body["changes"][0]["fields"]
    replacing.write_text((served.manifests / "a.yaml").read_text())
    assert plan(served, "-f", str(replacing)) == (0, {"changes": [], "errors": []})
    done = plan_text(served, "-f", str(replacing))
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "(no changes)")

    # A directory of candidates: each file by its path in it.
    (served.root / "drafts" / "a.yaml").unlink()
    (served.root / "drafts" / "d.json").write_text(
        json.dumps(
            {
                "apiVersion": "kvmrec.io/v1alpha1",
                "kind": "Domain",
                "metadata": {"name": f"{prefix}-d"},
                "spec": {"type": kind, "memory": "64Mi", "runStrategy": "Halted"},
            }
        )
    )
    code, body = plan(served, "-f", str(served.root / "drafts"))
    assert (code, changes(body)) == (2, [(f"{prefix}-b", "create"), (f"{prefix}-d", "create")])

    # Nothing was applied: no domain, no object in the service's state, a untouched.
    for name in ("b", "c", "d"):
        assert state_of(conn, f"{prefix}-{name}") is None
        assert served.object(f"{prefix}-{name}") is None
    assert state_of(conn, f"{prefix}-a") == "shutoff"
    obj = served.object(f"{prefix}-a")
    assert obj is not None and obj["generation"] == 1 and obj["synced"]
    assert served.running


def test_plan_f_checks_the_candidate_as_the_service_would_and_names_it(
    served: Controller, prefix: str
) -> None:
    kind = served.stack["KVMREC_DOMAIN_TYPE"]
    candidate = served.root / "bad.yaml"
    candidate.write_text(domain_manifest(f"{prefix}-e", kind, vcpus="many"))
    code, body = plan(served, "-f", str(candidate))
    assert code == 2
    assert body["changes"] == []
    [error] = body["errors"]
    assert error["source"] == str(candidate)
    assert "spec.vcpus" in error["message"]
    done = plan_text(served, "-f", str(candidate))
    assert done.returncode == 2
    assert f"error: {candidate}: " in done.stdout

    # An object another file of the directory defines is an error of the candidate.
    clash = served.root / "clash.yaml"
    clash.write_text(domain_manifest(f"{prefix}-a", kind, runStrategy="Halted"))
    code, body = plan(served, "-f", str(clash))
    assert code == 2
    [error] = body["errors"]
    assert error["source"] == str(clash) and "already defined in a.yaml" in error["message"]

    # What the directory would not read at all is refused, with the reason.
    text = served.root / "notes.txt"
    text.write_text(domain_manifest(f"{prefix}-f", kind))
    done = plan_text(served, "-f", str(text))
    assert done.returncode == 1
    assert "not a manifest file name" in done.stderr
    missing = plan_text(served, "-f", str(Path(served.root, "nowhere.yaml")))
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
