"""How every command finds the service's state and manifests: flag > environment >
configuration file > default, and the warning for a state no service holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmrec.cli import main
from kvmrec.cli.where import cli_settings
from kvmrec.settings import Settings
from kvmrec.store.lock import StateLock, in_use


def settings_for(*argv: str) -> Settings:
    return cli_settings(main.build_parser().parse_args(list(argv)), warn=False)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in ("KVMREC_CONFIG", "KVMREC_STATE", "KVMREC_MANIFESTS"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "config.yaml"
    path.write_text("state: file.db\nmanifests: /srv/from-file\n")
    path.chmod(0o644)
    return path


def test_the_file_named_by_the_environment_is_read(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file))
    settings = settings_for("snapshot", "list", "dom")
    assert settings.state == config_file.parent / "file.db"  # relative to the file
    assert settings_for("snapshot", "simulate", "p", "--from", "a", "--to", "b").manifests == (
        Path("/srv/from-file")
    )


def test_a_variable_beats_the_file_and_a_flag_beats_both(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file))
    monkeypatch.setenv("KVMREC_STATE", str(tmp_path / "env.db"))
    assert settings_for("status").state == tmp_path / "env.db"
    assert settings_for("events", "--state", "/x/flag.db").state == Path("/x/flag.db")
    assert settings_for("plan").manifests == Path("/srv/from-file")
    monkeypatch.setenv("KVMREC_MANIFESTS", "/srv/env")
    assert settings_for("plan").manifests == Path("/srv/env")
    # --config beats $KVMREC_CONFIG
    other = tmp_path / "other.yaml"
    other.write_text("manifests: /srv/other\nstate: /x/other.db\n")
    other.chmod(0o644)
    monkeypatch.delenv("KVMREC_MANIFESTS")
    assert settings_for("plan", "--config", str(other)).manifests == Path("/srv/other")


def test_without_anything_the_defaults(config_file: Path) -> None:
    settings = settings_for("history", "Domain/a", "--config", "/dev/null")
    assert (settings.state, settings.manifests) == (Settings.state, Settings.manifests)


def test_a_missing_file_named_by_the_environment_is_an_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file.parent / "typo.yaml"))
    with pytest.raises(SystemExit) as exited:
        settings_for("status")
    assert exited.value.code == 1
    assert "typo.yaml: no such configuration file" in capsys.readouterr().err


def test_a_state_no_service_holds_is_warned_about(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.db"
    args = main.build_parser().parse_args(["status", "--state", str(state)])
    assert in_use(state) is False
    cli_settings(args)
    assert "warning: no kvmrec service is running on" in capsys.readouterr().err
    with StateLock.acquire(state):
        assert in_use(state) is True
        cli_settings(args)
        assert capsys.readouterr().err == ""
    assert in_use(state) is False


def test_a_probe_does_not_keep_a_service_from_starting(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    with StateLock.acquire(state):
        pass  # the lock file now exists
    for _ in range(50):
        assert in_use(state) is False
        with StateLock.acquire(state) as lock:
            assert lock.held


def test_the_service_resolves_the_same_way(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMREC_CONFIG", str(config_file))
    assert settings_for("run").state == config_file.parent / "file.db"
    monkeypatch.setenv("KVMREC_STATE", str(tmp_path / "env.db"))
    run = settings_for("run", "--workers", "2", "--manifests", "/srv/flag")
    assert (run.state, run.manifests, run.workers) == (tmp_path / "env.db", Path("/srv/flag"), 2)
