"""Where a command finds the state, manifests and libvirt the running service uses.

Every command resolves its settings the one way ``kvmrec run`` does (kvmrec/config.py),
strongest first:

1. a flag: ``--state`` or ``--store``, ``--manifests``, ``--connect``;
2. ``$KVMREC_STATE`` or ``$KVMREC_STORE``, ``$KVMREC_MANIFESTS``;
3. the configuration file: ``--config FILE``, else ``$KVMREC_CONFIG``, else
   /etc/kvmrec/config.yaml if it exists (the service's own file);
4. the built-in default.

So ``kvmrec snapshot create`` by hand records into the state the service reads, and
``kvmrec status`` shows what the service does, without repeating its flags. A command
pointed at a state file no service holds (store/lock.py) says so on stderr and goes on:
reading an old state is legitimate, but writing into a state nobody serves is the mistake
that makes a snapshot "not kvmrec's".

``--store URL`` names the store when it is not a state file (``etcd://...``, a fleet's);
it and ``--state`` are one choice, made at the strongest level that sets either
(kvmrec/store_choice.py), and the two flags together are refused by the parser.

A command gives itself the options with :func:`add_state` / :func:`add_manifests`, then
``config.add_option(parser)`` last, and calls :func:`cli_settings` in its handler.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from kvmrec import config
from kvmrec import store as stores
from kvmrec.cli import safety
from kvmrec.settings import Settings, default_uri
from kvmrec.store.base import Store, StoreError
from kvmrec.store.lock import in_use


def _where(variable: str, default: Path) -> str:
    """Where an option's value comes from when it is not given, for ``--help``."""
    return (
        f"if not given, ${variable}, else the configuration file's (--config, "
        f"${config.CONFIG_VARIABLE} or {config.DEFAULT_PATH}), else {default}"
    )


def add_state(
    parser: argparse.ArgumentParser, purpose: str = "state file", *, store: bool = False
) -> None:
    """``--state FILE``, found as the service finds it when not given; with ``store``,
    ``--store URL`` too, the two exclusive."""
    group: Any = parser.add_mutually_exclusive_group() if store else parser
    group.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"{purpose}; {_where(config.ENVIRONMENT['state'], Settings.state)}",
    )
    if store:
        group.add_argument(
            "--store",
            default=None,
            metavar="URL",
            help="the store, when it is not a state file: etcd://HOST:PORT[,HOST:PORT...]"
            "[/PREFIX] (a path or sqlite:///PATH is a state file); if not given, "
            f"${config.ENVIRONMENT['store']}, else the configuration file's, else --state's",
        )


def open_store(
    args: argparse.Namespace, settings: Settings, *, read_only: bool = False, create: bool = True
) -> Store | None:
    """The store ``settings`` name, or None after saying on stderr why it cannot be
    opened (the command then exits 1)."""
    try:
        return stores.open(settings.store_location, read_only=read_only, create=create)
    except StoreError as exc:
        print(f"{command_of(args)}: {exc}", file=sys.stderr)
        return None


def add_manifests(parser: argparse.ArgumentParser) -> None:
    """``--manifests DIR``, found as the service finds it when not given."""
    parser.add_argument(
        "--manifests",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"manifest directory; {_where(config.ENVIRONMENT['manifests'], Settings.manifests)}",
    )


def flags_of(args: argparse.Namespace) -> Settings:
    """The Settings the command line alone makes: every option whose ``dest`` is a
    Settings field and that has a value (config.py's rule), over the defaults."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = value
    values.update(safety.settings_of(args))
    values["labels"] = getattr(args, "labels", None) or Settings().labels
    values["connect"] = getattr(args, "connect", None) or default_uri()
    return Settings(**values)


def cli_config(args: argparse.Namespace) -> config.Config:
    """The configuration in force for this command; raises ``config.ConfigError``."""
    return config.resolve(args, flags_of(args))


def command_of(args: argparse.Namespace) -> str:
    """``kvmrec snapshot create``, for messages."""
    words = [getattr(args, "command", None), getattr(args, "verb", None)]
    return " ".join(["kvmrec", *(w for w in words if isinstance(w, str))])


def cli_settings(args: argparse.Namespace, *, warn: bool = True) -> Settings:
    """The settings in force for this command, resolved as the service resolves them.

    A configuration file in error ends the command (exit 1, the reason on stderr). With
    ``warn``, a command that has a ``--state`` option and is about to use a state file no
    service holds says so on stderr."""
    try:
        settings = cli_config(args).settings
    except config.ConfigError as exc:
        print(f"{command_of(args)}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if warn and hasattr(args, "state") and settings.store is None:
        warn_unserved(command_of(args), settings.state)
    return settings


def warn_unserved(command: str, state: Path) -> None:
    """One line on stderr when no ``kvmrec run`` holds ``state``."""
    if in_use(state) is False:
        print(
            f"{command}: warning: no kvmrec service is running on {state}; to use the "
            "service's, give --state or set $KVMREC_STATE or $KVMREC_CONFIG",
            file=sys.stderr,
        )
