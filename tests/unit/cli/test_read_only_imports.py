"""What a read-only command loads: the state file's reader, not libvirt, OVSDB or metrics.

``kvmrec status`` is typed by people and polled by scripts; a whole process must answer
in a blink, and most of its time used to be imports it had no use for. Each command runs in
a fresh interpreter (a module imported by another test must not hide or fake a result), and
the test asserts the set of modules loaded, not a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvmrec import store as stores
from kvmrec.api.kinds import Manifest, ObjectKey
from kvmrec.store.records import Status
from support import etcd

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)

# Never for a command that only reads the state file: the backends' libraries, the
# validator, the metrics endpoint, and kvmrec's own layers that use them.
NEVER = (
    "libvirt",
    "ovs",
    "ovsdbapp",
    "jsonschema",
    "fastjsonschema",
    "prometheus_client",
    "kvmrec.backends",
    "kvmrec.reconcilers",
    "kvmrec.service",
    "kvmrec.metrics",
    "kvmrec.engine.workers",
    "kvmrec.store.convergence",  # what settling asks: the service's alone
)

# Run the command as `kvmrec` does, then say which modules were loaded.
PROBE = (
    "import json, sys\n"
    "from kvmrec.cli.main import main\n"
    "code = main(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as f: json.dump(sorted(sys.modules), f)\n"
    "sys.exit(code)\n"
)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("state") / "state.db"
    store = stores.open(path)
    spec = {"memory": "64Mi", "vcpus": 1, "runStrategy": "Always", "autostart": False}
    for name in ("web-1", "web-2"):
        store.apply(Manifest("Domain", name, spec, f"{name}.yaml", 0), T0)
        key = ObjectKey("Domain", name)
        status = Status(observed_generation=1).with_condition("Ready", "True", "Running", "", T0)
        store.record(key, status, [("Normal", "Started", "started")], T0)
    store.close()
    return path


def loaded(tmp_path: Path, *argv: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMREC_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 2), done.stderr
    return set(json.loads(out.read_text()))


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER))


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("status",), id="status"),
        pytest.param(("status", "-o", "json"), id="status-json"),
        pytest.param(("status", "domain/web-1"), id="status-one"),
        pytest.param(("events",), id="events"),
        pytest.param(("history", "domain/web-1"), id="history"),
        pytest.param(("describe", "domain/web-1"), id="describe"),
    ],
)
def test_read_only_commands_load_no_backend_validator_or_metrics(
    argv: tuple[str, ...], state: Path, tmp_path: Path
) -> None:
    modules = loaded(tmp_path, *argv, "--state", str(state))
    assert "kvmrec.store.sqlite" in modules  # the probe saw the command run
    assert forbidden(modules) == []
    # What only a write needs (digests, new uids, retry jitter): about 15 ms of imports.
    assert modules.isdisjoint({"hashlib", "uuid", "random"})


@pytest.mark.parametrize("command", ["status", "events"])
def test_table_and_json_output_loads_no_yaml_nor_the_kinds_models(
    command: str, state: Path, tmp_path: Path
) -> None:
    for output in ("table", "json"):
        modules = loaded(tmp_path, command, "--state", str(state), "-o", output)
        assert "yaml" not in modules
        assert "kvmrec.api.kinds" not in modules


@pytest.mark.parametrize("output", ["table", "json"])
def test_hosts_loads_no_sqlite_yaml_kinds_or_backend(output: str, tmp_path: Path) -> None:
    # An empty prefix of the stack's etcd: the command only reads, so nothing to clean up.
    url = f"etcd://{etcd.endpoints()}/kvmrec-test-{uuid.uuid4().hex[:12]}"
    modules = loaded(tmp_path, "hosts", "--store", url, "-o", output)
    assert "kvmrec.store.etcd.view" in modules  # the probe saw the command run
    assert forbidden(modules) == []
    assert "kvmrec.store.sqlite" not in modules and "yaml" not in modules
    assert "kvmrec.api.kinds" not in modules  # memory and vCPUs read without the models


def test_the_probe_sees_what_a_command_that_validates_loads(tmp_path: Path) -> None:
    # The same probe on `validate` finds the compiled check (a valid manifest needs no
    # more) and, for a manifest it refuses, the validator: the assertions above can fail.
    head = "apiVersion: kvmrec.io/v1alpha1\nkind: Domain\nmetadata:\n  name: web\n"
    valid, refused = tmp_path / "web.yaml", tmp_path / "bad.yaml"
    valid.write_text(head + "spec:\n  memory: 64Mi\n")
    refused.write_text(head + "spec:\n  memory: 64Mi\n  colour: red\n")
    found = forbidden(loaded(tmp_path, "validate", str(valid)))
    assert "fastjsonschema" in found and "jsonschema" not in found
    assert "jsonschema" in forbidden(loaded(tmp_path, "validate", str(refused)))
