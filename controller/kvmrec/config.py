"""The configuration file, ``/etc/kvmrec/config.yaml``: the service's flags, kept in one place.

A systemd unit's ``ExecStart=`` is a poor home for a dozen flags, and a package upgrade
replaces it; an operator edits a file. Every key of the file is a field of
:class:`~kvmrec.settings.Settings` of a type YAML can spell (paths, URIs, numbers, booleans,
lists of paths), so a flag added to ``run`` for a new setting is a key of the file the
moment the setting exists, under the same name (``--allow-mass-delete`` ->
``allow_mass_delete``; the flag's ``dest`` must be the field's name). Two more keys are
the process's, not the service's: ``log_level`` and ``log_format``. The file may also tune
settings that have no flag (``debounce``, ``drain_timeout``, ...). The keys and what
values they take are ``config_values.py``'s.

Where a value comes from, strongest first: a flag given on the command line;
``$KVMREC_STATE`` and ``$KVMREC_MANIFESTS`` (for ``state`` and ``manifests`` only); the
file; the built-in default (``$LIBVIRT_DEFAULT_URI`` included, for ``connect``). The file
is ``--config FILE``, else the one ``$KVMREC_CONFIG`` names, else the default file. So a
drop-in that overrides ``ExecStart=`` with one flag changes that one setting, and every
command run by hand (``kvmrec plan``, ``status``, ``snapshot``, ...; cli/where.py) finds
the state, manifests and libvirt the service uses: ``make run`` exports ``KVMREC_CONFIG``
for the shells of its operator to do the same.

The file is checked whole before anything starts: an unknown key, a value of the wrong type
or out of range, a duplicate key, or YAML that does not parse is an error naming the file,
the line and the key. Relative paths are taken from the file's own directory, as the file
is read by a service whose working directory is ``/``. Without ``--config`` or
``$KVMREC_CONFIG`` the default file is read if it exists; a missing default file is simply
no file, but a missing file named with ``--config`` or ``$KVMREC_CONFIG`` is an error (a
typo must not silently run a default host).

Which flags were given. argparse fills every option with its default, so "the user typed
``--workers 4``" and "the default is 4" look the same afterwards, and only the first must
beat the file. :func:`track` makes a parser's options note, as they are parsed, that they
were given; :func:`given` reads the note back. Comparing with defaults instead would let
the file override an explicit flag that happens to equal the default.

A running service re-reads the file on SIGHUP (``kvmrec.daemon``); only some settings can
change without a restart, and the rest are reported as needing one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kvmrec import config_values, ownership, store_choice
from kvmrec.settings import Settings

if TYPE_CHECKING:
    import yaml

__all__ = [
    "CONFIG_VARIABLE",
    "DEFAULT_PATH",
    "ENVIRONMENT",
    "Config",
    "ConfigError",
    "FileConfig",
    "add_option",
    "file_named",
    "given",
    "load",
    "resolve",
    "track",
]

DEFAULT_PATH = Path("/etc/kvmrec/config.yaml")

CONFIG_VARIABLE = "KVMREC_CONFIG"
"""Names the configuration file when no ``--config`` is given."""

ENVIRONMENT = {"state": "KVMREC_STATE", "manifests": "KVMREC_MANIFESTS", "store": "KVMREC_STORE"}
"""Settings an environment variable may set, over the file and under a flag: where the
service keeps its state (a file, or another store) and reads its manifests, what a
command by hand must agree on."""


# The attribute prefix under which tracked parsers note their given options (one attribute
# per parser: a subcommand's namespace is copied over its parent's, and would otherwise
# erase the note of ``kvmrec --log-level DEBUG run``).
_GIVEN = "_config_given:"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class FileConfig:
    """What one configuration file says, checked and typed."""

    path: Path | None
    """The file read; None when there was none (the default file is absent)."""
    values: Mapping[str, Any]
    """Key -> value, only the keys the file sets."""


@dataclass(frozen=True)
class Config:
    """The configuration in force: the command line over the file over the defaults."""

    settings: Settings
    log_level: str
    log_format: str
    file: FileConfig
    overridden: frozenset[str] = frozenset()
    """Keys the file sets that a flag on the command line overrides."""


def _untrusted(st: os.stat_result) -> str | None:
    """Why a configuration file with this owner and mode cannot be trusted, or None.

    The file sets where disk images may be and which manifests are trusted, so it is held
    to the manifests' own rule (kvmrec/ownership.py). Judged on the descriptor it is read
    through."""
    if not stat.S_ISREG(st.st_mode):
        # `--config /dev/null`: no configuration at all, as with other tools.
        return None if os.path.samestat(st, os.stat(os.devnull)) else "not a regular file"
    return ownership.verdict(st.st_uid, st.st_mode)


def load(path: Path | None = None, *, default: Path | None = None) -> FileConfig:
    """Read and check the file at ``path``, or at ``default`` (:data:`DEFAULT_PATH`) if
    ``path`` is None.

    A missing default file gives an empty :class:`FileConfig`; anything else that goes
    wrong raises :class:`ConfigError` naming the file (and the line and key, if any).
    """
    target = path if path is not None else default if default is not None else DEFAULT_PATH
    try:
        with target.open("rb") as handle:
            problem = _untrusted(os.fstat(handle.fileno()))
            if problem is not None:
                raise ConfigError(f"{target}: refused: {problem}")
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        if path is None:
            return FileConfig(None, types.MappingProxyType({}))
        raise ConfigError(f"{target}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{target}: cannot read the configuration file: {why}") from None
    import yaml  # only when there is a file: most commands by hand run without one

    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise ConfigError(f"{target}: not valid YAML: {exc}") from None
        if node is None:
            return FileConfig(target, types.MappingProxyType({}))  # empty: nothing set
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(
                f"{target}: line {node.start_mark.line + 1}: expected a mapping of keys to "
                "values (`workers: 4`)"
            )
        return FileConfig(target, types.MappingProxyType(_values(loader, node, target)))
    finally:
        loader.dispose()


def _values(loader: yaml.SafeLoader, node: yaml.MappingNode, target: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key_node, value_node in node.value:
        where = f"{target}: line {key_node.start_mark.line + 1}"
        try:
            key = loader.construct_object(key_node, deep=True)
            value = loader.construct_object(value_node, deep=True)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys are names, got {key!r}")
        if key not in config_values.known_keys():
            raise ConfigError(f"{where}: {config_values.unknown(key)}")
        if key in values:
            # PyYAML would keep the last one silently; which one the operator meant is a
            # guess we should not make.
            raise ConfigError(f"{where}: {key} is set twice")
        try:
            values[key] = config_values.check(value, config_values.known_keys()[key], target.parent)
            config_values.check_range(key, values[key])
        except config_values.BadValue as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None
    return values


# -- the command line over the file --------------------------------------------------------


def track(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` defined so far note, when given, that it was.

    Call it after the command's last ``add_argument``; :func:`given` reads the notes.
    """
    attribute = _GIVEN + parser.prog
    # argparse keeps no public list of a parser's actions, nor a hook for "this option was
    # on the command line"; _actions is the list argparse itself and argcomplete read. Each
    # option's class is swapped for a subclass that notes the option before acting as
    # before, so whatever kind of option a command adds (store, store_true, append, ...)
    # is tracked without its author doing anything.
    for action in parser._actions:
        if action.option_strings and not getattr(type(action), "_tracks", False):
            action.__class__ = _tracking(type(action), attribute)


def _tracking(cls: type[argparse.Action], attribute: str) -> type[argparse.Action]:
    def note_then_act(
        self: argparse.Action,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        noted: frozenset[str] = getattr(namespace, attribute, frozenset())
        setattr(namespace, attribute, noted | {self.dest})
        cls.__call__(self, parser, namespace, values, option_string)

    return cast(
        type[argparse.Action],
        type(f"Tracked{cls.__name__}", (cls,), {"__call__": note_then_act, "_tracks": True}),
    )


def add_option(parser: argparse.ArgumentParser) -> None:
    """Give a command ``--config FILE`` and :func:`track` its options (call it last)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"configuration file (default ${CONFIG_VARIABLE}, else {DEFAULT_PATH} if it "
        "exists); flags and $KVMREC_STATE, $KVMREC_MANIFESTS override it",
    )
    track(parser)


def given(args: argparse.Namespace) -> frozenset[str]:
    """The ``dest`` of every tracked option that was on the command line."""
    noted: set[str] = set()
    for name, value in vars(args).items():
        if name.startswith(_GIVEN):
            noted |= value
    return frozenset(noted)


def file_named(args: argparse.Namespace) -> Path | None:
    """The file ``--config`` or ``$KVMREC_CONFIG`` names; None for the default file."""
    flag: Path | None = getattr(args, "config", None)
    if flag is not None:
        return flag
    variable = os.environ.get(CONFIG_VARIABLE)
    return Path(variable).expanduser() if variable else None


def resolve(args: argparse.Namespace, flags: Settings, *, default: Path | None = None) -> Config:
    """The configuration in force: ``flags`` (the Settings the command line alone makes)
    with the file's values for every setting no flag was given for.

    Reads the file again on every call (a reload calls it again); raises ConfigError.
    """
    file = load(file_named(args), default=default)
    explicit = given(args)
    fields = {f.name for f in dataclasses.fields(Settings)}
    from_file = {k: v for k, v in file.values.items() if k in fields and k not in explicit}
    variables: dict[str, Any] = {
        key: value if key == "store" else Path(value).expanduser()
        for key, value in ((k, os.environ.get(v)) for k, v in ENVIRONMENT.items())
        if value
    }
    from_environment = {k: v for k, v in variables.items() if k not in explicit}
    try:
        store = store_choice.choose(
            [
                store_choice.Level(
                    "--store and --state",
                    {k: getattr(flags, k) for k in ("store", "state") if k in explicit},
                ),
                store_choice.Level("$KVMREC_STORE and $KVMREC_STATE", variables),
                store_choice.Level(
                    f"{file.path}: store and state", file.values, file.path and file.path.parent
                ),
            ]
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = dataclasses.replace(flags, **{**from_file, **from_environment, **store})

    def process(key: str, fallback: str) -> str:
        if key in explicit:
            return str(getattr(args, key))
        return str(file.values.get(key, getattr(args, key, fallback)))

    return Config(
        settings,
        process("log_level", "INFO"),
        process("log_format", "text"),
        file,
        frozenset(file.values) & explicit,
    )
