"""The configuration file: keys are Settings fields, values are checked, flags win."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmrec import config, config_values
from kvmrec.backends.errors import Unavailable
from kvmrec.cli import plan as plan_command
from kvmrec.cli import run as run_command
from kvmrec.cli.main import build_parser, main
from kvmrec.settings import Settings
from kvmrec.store.base import StoreError

EXAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "config.example.yaml"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- reading and checking --------------------------------------------------------------------


def test_values_are_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "manifests: /srv/manifests\n"
        "connect: test:///default\n"
        "resync: 30\n"
        "workers: 8\n"
        "allow_mass_delete: true\n"
        "disk_roots: [/srv/images, /data/kvm]\n"
        "metrics_listen: null\n"
        "log_level: DEBUG\n",
    )
    values = config.load(path).values
    assert values == {
        "manifests": Path("/srv/manifests"),
        "connect": "test:///default",
        "resync": 30.0,
        "workers": 8,
        "allow_mass_delete": True,
        "disk_roots": (Path("/srv/images"), Path("/data/kvm")),
        "metrics_listen": None,
        "log_level": "DEBUG",
    }
    assert isinstance(values["resync"], float)


def test_relative_paths_are_taken_from_the_file_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "manifests: manifests\nstate: ../state.db\n")
    values = config.load(path).values
    assert values["manifests"] == tmp_path / "manifests"
    assert values["state"] == tmp_path / "../state.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: four\n", "line 1: workers: expected a whole number, got 'four'"),
        ("workers: 2.5\n", "workers: expected a whole number, got 2.5"),
        ("workers: true\n", "workers: expected a whole number, got True"),
        ("resync: fast\n", "resync: expected a number, got 'fast'"),
        ("resync: .inf\n", "resync: expected a finite number, got inf"),
        ("resync: 0\n", "resync: must be greater than 0, got 0.0"),
        ("workers: 0\n", "workers: must be greater than 0, got 0"),
        ("drain_timeout: -1\n", "drain_timeout: must not be negative, got -1.0"),
        ("allow_mass_delete: 'yes'\n", "allow_mass_delete: expected true or false, got 'yes'"),
        ("manifests: 12\n", "manifests: expected a path, got 12"),
        ("manifests:\n", "manifests: expected a path, got nothing (null)"),
        ("connect: ''\n", "connect: expected a string, got an empty string"),
        ("disk_roots: /srv\n", "disk_roots: expected a list of paths, got '/srv'"),
        ("disk_roots: [/srv, 3]\n", "disk_roots: item 2: expected a path, got 3"),
        ("log_level: verbose\n", "log_level: expected one of DEBUG, INFO, WARNING, ERROR"),
        ("log_format: xml\n", "log_format: expected one of text, json, got 'xml'"),
        ("ovsdb: {a: 1}\n", "ovsdb: expected a string, got a mapping"),
    ],
)
def test_wrong_values_are_errors_naming_file_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "# a comment\n" + text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: line 2: ")
    assert message.removeprefix("line 1: ") in str(caught.value)


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("allow-mass-delete", "did you mean 'allow_mass_delete'?"),
        ("worker", "did you mean 'workers'?"),
        ("once", "known keys: allow_device_disks, allow_mass_delete, connect"),
        ("backoff", "known keys: "),  # a Settings field YAML cannot spell is no key
    ],
)
def test_unknown_keys_are_errors_naming_file_and_key(tmp_path: Path, key: str, hint: str) -> None:
    path = write(tmp_path, f"workers: 2\n{key}: 1\n")
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: line 2: unknown key {key!r} (")
    assert hint in str(caught.value)


def test_a_key_set_twice_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\nresync: 10\nworkers: 3\n")
    with pytest.raises(config.ConfigError, match=r"line 3: workers is set twice"):
        config.load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- workers\n", "line 1: expected a mapping of keys to values"),
        ("workers: [\n", "not valid YAML"),
        ("workers: 1\n---\nworkers: 2\n", "not valid YAML"),
        ("1: 2\n", "line 1: keys are names, got 1"),
    ],
)
def test_a_file_that_is_not_a_mapping_of_settings(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError, match=message) as caught:
        config.load(path)
    assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize(("mode", "writer"), [(0o664, "group"), (0o646, "others")])
def test_a_file_others_can_write_is_refused(tmp_path: Path, mode: int, writer: str) -> None:
    path = write(tmp_path, "disk_roots: [/]\n")
    path.chmod(mode)
    with pytest.raises(
        config.ConfigError,
        match=rf"refused: writable by {writer} \(mode 0{mode:o}\); fix with chmod go-w$",
    ):
        config.load(path)
    path.chmod(0o644)
    assert config.load(path).values == {"disk_roots": (Path("/"),)}


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_someone_else_owns_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 2\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(
        config.ConfigError,
        match=r"refused: owned by uid 65534 \(nobody\), not by root; fix with chown$",
    ):
        config.load(path)


def test_an_empty_file_sets_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "# everything commented out\n")
    assert config.load(path) == config.FileConfig(path, {})


def test_a_missing_default_file_is_no_file_but_a_missing_explicit_one_is_an_error(
    tmp_path: Path,
) -> None:
    assert config.load(None, default=tmp_path / "absent.yaml") == config.FileConfig(None, {})
    with pytest.raises(config.ConfigError, match=r"absent\.yaml: no such configuration file"):
        config.load(tmp_path / "absent.yaml")


def test_an_unreadable_default_file_is_an_error(tmp_path: Path) -> None:
    # A directory where the file should be: present, yet not readable as a file. (A mode
    # of 000 would not do: the tests may run as root, who reads it anyway.)
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(config.ConfigError, match="cannot read the configuration file"):
        config.load(None, default=tmp_path / "config.yaml")


def test_keys_are_the_settings_fields_yaml_can_spell_and_the_log_options() -> None:
    keys = config_values.known_keys()
    assert {"manifests", "connect", "state", "resync", "ovsdb", "workers"} <= set(keys)
    assert {"allow_mass_delete", "insecure_manifests", "disk_roots", "log_level"} <= set(keys)
    assert "backoff" not in keys


def test_the_example_file_is_valid_and_mentions_every_key() -> None:
    values = config.load(EXAMPLE).values
    assert values["manifests"] == Settings.manifests
    assert values["workers"] == Settings.workers
    text = EXAMPLE.read_text()
    missing = [key for key in config_values.known_keys() if f"{key}:" not in text]
    assert not missing, f"document these keys in {EXAMPLE.name}: {missing}"


# -- flags over the file over the defaults ---------------------------------------------------


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    # main() configures the root logger; leave it as the next test expects it.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``kvmrec run`` up to the point it would build the Service, whose settings are kept."""
    seen: dict[str, Any] = {}

    def service(settings: Settings) -> None:
        seen["settings"] = settings
        raise StoreError("stopped by the test")

    monkeypatch.setattr(run_command, "Service", service)
    monkeypatch.setattr(config, "DEFAULT_PATH", Path("/nonexistent/kvmrec/config.yaml"))
    return seen


def run(tmp_path: Path, *argv: str, before: tuple[str, ...] = ()) -> int:
    state = ("--state", str(tmp_path / "state.db"))
    return main([*before, "run", *state, *argv])


def test_the_file_sets_what_no_flag_gives(tmp_path: Path, captured: dict[str, Any]) -> None:
    path = write(
        tmp_path,
        "workers: 8\nresync: 60\nallow_mass_delete: true\nconnect: test:///default\n"
        "disk_roots: [/srv/images]\ndebounce: 1.5\n",
    )
    assert run(tmp_path, "--config", str(path)) == 1
    settings = captured["settings"]
    assert (settings.workers, settings.resync, settings.allow_mass_delete) == (8, 60.0, True)
    assert settings.connect == "test:///default"
    assert settings.disk_roots == (Path("/srv/images"),)
    assert settings.debounce == 1.5  # a setting that has no flag
    assert settings.ovsdb == Settings.ovsdb  # neither: the default


def test_a_flag_wins_over_the_file_even_when_it_equals_the_default(
    tmp_path: Path, captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///env")
    path = write(
        tmp_path,
        "workers: 8\nresync: 60\nconnect: test:///file\ndisk_roots: [/srv/images]\n"
        "state: /elsewhere/state.db\n",
    )
    code = run(
        tmp_path,
        "--config",
        str(path),
        "--workers",
        str(Settings.workers),
        "--disk-root",
        "/data/vms",
    )
    assert code == 1
    settings = captured["settings"]
    assert settings.workers == Settings.workers
    assert settings.disk_roots == (Path("/data/vms"),)
    assert settings.state == tmp_path / "state.db"
    assert settings.resync == 60.0
    assert settings.connect == "test:///file"  # the file wins over the environment


def test_a_fleet_host_takes_its_store_name_and_labels_from_the_file(
    tmp_path: Path, captured: dict[str, Any]
) -> None:
    path = write(
        tmp_path,
        "store: etcd://127.0.0.1:9/kvmrec\nhost: hv-1\nlabels: {zone: a, kvmrec.io/disk: ssd}\n",
    )
    assert main(["run", "--config", str(path)]) == 1
    settings = captured["settings"]
    assert (settings.store, settings.host) == ("etcd://127.0.0.1:9/kvmrec", "hv-1")
    assert dict(settings.labels) == {"zone": "a", "kvmrec.io/disk": "ssd"}
    # --label flags replace the file's labels as a whole, as any flag replaces its key.
    assert main(["run", "--config", str(path), "--label", "zone=b"]) == 1
    assert dict(captured["settings"].labels) == {"zone": "b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("labels: [zone=a]\n", "line 1: labels: expected a mapping of label keys to values"),
        ("labels: {ssd: true}\n", "labels: ssd: a label value is a string, got True (quote it)"),
        ("labels: {1: a}\n", "labels: 1: a label key is a string, got 1"),
        ("labels: {a b: c}\n", "labels: 'a b=c': 'a b' is not a label key"),
        ("labels: {zone: -a}\n", "labels: 'zone=-a': '-a' is not a label value"),
    ],
)
def test_wrong_labels_are_errors_naming_the_label(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


def test_without_a_file_the_defaults_and_environment_stand(
    tmp_path: Path, captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///env")
    assert run(tmp_path) == 1
    assert captured["settings"] == Settings(state=tmp_path / "state.db", connect="test:///env")


def test_the_log_level_of_the_file_yields_to_the_global_flag(
    tmp_path: Path, captured: dict[str, Any]
) -> None:
    path = write(tmp_path, "log_level: DEBUG\n")
    assert run(tmp_path, "--config", str(path)) == 1
    assert logging.getLogger().level == logging.DEBUG
    assert run(tmp_path, "--config", str(path), before=("--log-level", "INFO")) == 1
    assert logging.getLogger().level == logging.INFO


def test_a_bad_file_stops_run_before_anything_starts(
    tmp_path: Path, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "workers: 2\nworkerz: 3\n")
    assert run(tmp_path, "--config", str(path)) == 1
    err = capsys.readouterr().err
    assert f"kvmrec run: {path}: line 2: unknown key 'workerz'" in err
    assert "settings" not in captured
    assert not (tmp_path / "state.db").exists()


def test_a_missing_explicit_file_stops_run(
    tmp_path: Path, captured: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--config", str(tmp_path / "nope.yaml")) == 1
    assert "nope.yaml: no such configuration file" in capsys.readouterr().err


def test_the_default_file_is_read_when_present(
    tmp_path: Path, captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", write(tmp_path, "workers: 3\n"))
    assert run(tmp_path) == 1
    assert captured["settings"].workers == 3


def test_plan_reads_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_plan(settings: Settings, *_args: Any) -> None:
        seen["settings"] = settings
        raise Unavailable("stopped by the test")

    monkeypatch.setattr(plan_command, "plan", fake_plan)
    path = write(
        tmp_path,
        "manifests: m\nconnect: test:///default\nstate: s.db\nworkers: 8\n"
        "insecure_manifests: true\n",
    )
    assert main(["plan", "--config", str(path), "--state", str(tmp_path / "x.db")]) == 1
    settings = seen["settings"]
    assert settings.manifests == tmp_path / "m"
    assert settings.connect == "test:///default"
    assert settings.state == tmp_path / "x.db"
    assert settings.insecure_manifests is True


def test_given_notes_only_the_options_on_the_command_line() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["--log-level", "INFO", "run", "--workers", "4", "--allow-mass-delete", "--disk-root", "/a"]
    )
    assert config.given(args) == {"log_level", "workers", "allow_mass_delete", "disk_roots"}
    assert config.given(parser.parse_args(["run"])) == frozenset()


def test_resolve_reports_keys_a_flag_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 8\nresync: 60\n")
    args = build_parser().parse_args(["run", "--config", str(path), "--workers", "2"])
    resolved = config.resolve(args, Settings(workers=2))
    assert resolved.settings.workers == 2
    assert resolved.settings.resync == 60.0
    assert resolved.overridden == {"workers"}
    assert resolved.file.path == path


def test_the_fleet_schedulers_overcommit_comes_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "overcommit_memory: 1.5\novercommit_cpu: 8\n")
    assert config.load(path).values == {"overcommit_memory": 1.5, "overcommit_cpu": 8.0}
    path = write(tmp_path, "overcommit_cpu: 0\n")
    with pytest.raises(config.ConfigError, match="overcommit_cpu"):
        config.load(path)
