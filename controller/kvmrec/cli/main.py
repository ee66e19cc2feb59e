"""``kvmrec``: argument parsing, logging set-up and dispatch to one module per command.

Exit codes, shared by every command: 0 all synced and valid, 2 drift, not ready, changes
pending or an invalid manifest, 1 kvmrec itself failed (no state file, cannot connect).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import signal
import sys
from collections.abc import Sequence

# Nothing heavier than argparse before main() has guarded `run` against an early SIGTERM
# (kvmrec/early_stop.py): the configuration and logging modules are imported in main().
from kvmrec import __version__, early_stop

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2

# Each command and the module (in kvmrec.cli) that parses and runs it. Only the module of
# the command given is imported (all of them for `kvmrec --help`): `status`, `events` and
# `describe` then start without loading libvirt, OVSDB, the schemas' validator or metrics
# (tests/unit/cli/test_read_only_imports.py holds them to it).
_COMMANDS = {
    "run": "run",
    "status": "status",
    "describe": "describe",
    "plan": "plan",
    "validate": "validate",
    "explain": "explain",
    "import": "importing",
    "snapshot": "snapshot",
    "events": "history",
    "history": "history",
    "guest": "guest",
    "prune": "prune",
    "reload": "reload",
    "apply": "apply",
    "delete": "delete",
    "publish": "publish",
    "doctor": "doctor",
    "console": "console",
    "hosts": "hosts",
    "migrate": "migrate",
    "cordon": "maintenance",
    "uncordon": "maintenance",
    "drain": "maintenance",
}

# Global options that take a value: what follows them is not the command.
_VALUED = ("--log-format", "--log-level")

# The service logs what it does at INFO. Every other command prints its answer on stdout
# (plan's progress line is its own, not a log line), and its log holds warnings and errors
# only unless --log-level asks for more; a configuration file's log_level is the service's.
_SERVICES = frozenset({"run", "publish"})


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named on the command line, if any: the first word that is neither a
    global option nor its value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when it is one."""
    from kvmrec import config

    parser = argparse.ArgumentParser(
        prog="kvmrec",
        description="Declarative, self-healing reconciling controller for KVM hosts.",
        epilog="Every command finds the state, manifests and libvirt of the running service "
        "the same way, strongest first: --state (or --store)/--manifests/--connect; "
        "$KVMREC_STATE (or $KVMREC_STORE), $KVMREC_MANIFESTS; the configuration file "
        "(--config, else $KVMREC_CONFIG, else "
        f"{config.DEFAULT_PATH} if it exists); the defaults. `make run` prints the "
        "export KVMREC_CONFIG=... line for other shells.",
    )
    parser.add_argument("--version", action="version", version=f"kvmrec {__version__}")
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines for people (text) or for log pipelines (json, one object a line)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    config.track(parser)  # the configuration file's log_level and log_format yield to these
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in _COMMANDS:
        modules = [_COMMANDS[command]]
    else:
        modules = list(dict.fromkeys(_COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"kvmrec.cli.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    command = _command_in(argv)
    if command not in _SERVICES:
        # `kvmrec status | head` should stop quietly, as other Unix tools do. Not a
        # service: a write to a socket its peer reset (etcd going away) would kill it.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if command in _SERVICES:
        early_stop.guard()  # until the daemon's own signal handling (kvmrec/daemon.py)
    try:
        return _dispatch(command, argv)
    finally:
        early_stop.release()


def _dispatch(command: str | None, argv: Sequence[str]) -> int:
    from kvmrec import config, logs

    parser = build_parser(command)
    # What the imports built lives as long as the process: the collections a command that
    # reads thousands of records triggers need not walk it again (a tenth of `status`).
    gc.freeze()
    args = parser.parse_args(argv)
    logs.quiet(args.command not in _SERVICES and "log_level" not in config.given(args))
    logs.setup(args.log_level, args.log_format)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
