"""``--store URL`` beside ``--state FILE``: found as every setting is (flag > environment >
configuration file > the state file), one choice at each level, and ``run``'s fleet host
options checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmrec.cli import main
from kvmrec.cli.where import cli_settings
from kvmrec.settings import Settings

ETCD = "etcd://127.0.0.1:2379/kvmrec"


def settings_for(*argv: str) -> Settings:
    return cli_settings(main.build_parser().parse_args(list(argv)), warn=False)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("KVMREC_CONFIG", "KVMREC_STATE", "KVMREC_MANIFESTS", "KVMREC_STORE"):
        monkeypatch.delenv(variable, raising=False)


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


@pytest.mark.parametrize(
    "command",
    [
        "run",
        "status",
        "plan",
        "events",
        "history",
        "describe",
        "apply",
        "delete",
        "publish",
        "prune",
    ],
)
def test_every_store_reading_command_takes_store(command: str) -> None:
    argv = [command, "--store", ETCD, "--config", "/dev/null"]
    if command in ("history", "describe", "delete"):
        argv.insert(1, "Domain/a")
    if command == "apply":
        argv += ["-f", "x.yaml"]
    settings = settings_for(*argv)
    assert settings.store == ETCD
    assert settings.store_location == ETCD


def test_store_and_state_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.build_parser().parse_args(["status", "--store", ETCD, "--state", "/x.db"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_without_store_the_state_file_is_the_store() -> None:
    settings = settings_for("status", "--state", "/x/flag.db", "--config", "/dev/null")
    assert settings.store is None
    assert settings.store_location == Path("/x/flag.db")
    assert settings_for("status", "--config", "/dev/null").store_location == Settings.state


def test_a_sqlite_store_is_the_state_file(tmp_path: Path) -> None:
    for given in (f"sqlite://{tmp_path}/s.db", f"{tmp_path}/s.db"):
        settings = settings_for("status", "--store", given, "--config", "/dev/null")
        assert (settings.store, settings.state) == (None, tmp_path / "s.db")


def test_the_variable_beats_the_file_and_a_flag_beats_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file(tmp_path, "state: file.db\n")))
    assert settings_for("status").store is None
    monkeypatch.setenv("KVMREC_STORE", ETCD)
    assert settings_for("status").store == ETCD
    # --state on the command line is the strongest choice: the variable's store yields.
    flagged = settings_for("status", "--state", "/x/flag.db")
    assert (flagged.store, flagged.state) == (None, Path("/x/flag.db"))
    other = "etcd://10.0.0.1:2379"
    assert settings_for("events", "--store", other).store == other


def test_a_state_variable_beats_the_files_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file(tmp_path, f"store: {ETCD}\n")))
    assert settings_for("status").store == ETCD
    monkeypatch.setenv("KVMREC_STATE", str(tmp_path / "env.db"))
    settings = settings_for("status")
    assert (settings.store, settings.state) == (None, tmp_path / "env.db")


def test_a_files_sqlite_store_is_relative_to_the_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "store: state/here.db\n")
    settings = settings_for("status", "--config", str(path))
    assert (settings.store, settings.state) == (None, tmp_path / "state/here.db")


def test_both_at_one_level_is_an_error_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path, f"store: {ETCD}\nstate: s.db\n")
    with pytest.raises(SystemExit) as exited:
        settings_for("status", "--config", str(path))
    assert exited.value.code == 1
    assert f"kvmrec status: {path}: store and state are both set" in capsys.readouterr().err
    monkeypatch.setenv("KVMREC_STORE", ETCD)
    monkeypatch.setenv("KVMREC_STATE", "/x.db")
    with pytest.raises(SystemExit):
        settings_for("events", "--config", "/dev/null")
    assert "$KVMREC_STORE and $KVMREC_STATE are both set" in capsys.readouterr().err
    # A flag settles it above both.
    assert settings_for("events", "--config", "/dev/null", "--store", ETCD).store == ETCD


def test_run_host_and_labels_are_parsed() -> None:
    settings = settings_for(
        "run", "--store", ETCD, "--host", "hv-1", "--label", "zone=a", "--label", "ssd=true"
    )
    assert (settings.host, dict(settings.labels)) == ("hv-1", {"zone": "a", "ssd": "true"})
    assert dict(settings_for("run", "--config", "/dev/null").labels) == {}


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--label", "zone"], "'zone' is not KEY=VALUE"),
        (["--label", "zo ne=a"], "is not a label key"),
        (["--label", "zone=a b"], "is not a label value"),
        (["--label", "zone=a", "--label", "zone=b"], "--label zone: given twice (a, b)"),
        (["--host", "HV_1"], "'HV_1' is not a host name"),
    ],
)
def test_malformed_host_options_are_usage_errors(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main.build_parser().parse_args(["run", "--store", ETCD, "--host", "hv-1", *argv])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--store", ETCD], f"kvmrec run: {ETCD}: a fleet host needs --host NAME"),
        (["--host", "hv-1"], "kvmrec run: --host and --label name a host of a fleet"),
        (["--label", "a=b"], "kvmrec run: --host and --label name a host of a fleet"),
    ],
)
def test_run_refuses_a_fleet_store_without_a_host_and_a_host_without_one(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = [] if "--store" in argv else ["--state", str(tmp_path / "s.db")]
    code = main.main(["run", "--config", "/dev/null", "--once", *state, *argv])
    assert code == 1
    assert said in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()  # refused before anything was opened
