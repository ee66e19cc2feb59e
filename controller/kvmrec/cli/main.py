"""``kvmrec``: argument parsing, logging set-up and dispatch to one module per command.

Exit codes, shared by every command: 0 all synced and valid, 2 drift, not ready, changes
pending or an invalid manifest, 1 kvmrec itself failed (no state file, cannot connect).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from kvmrec import __version__, config, logs
from kvmrec.cli import (
    explain,
    guest,
    history,
    importing,
    plan,
    prune,
    run,
    snapshot,
    status,
    validate,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES = 2

_COMMANDS = (run, status, plan, validate, explain, importing, snapshot, history, guest, prune)

# The service logs what it does at INFO. Every other command prints its answer on stdout
# (plan's progress line is its own, not a log line), and its log holds warnings and errors
# only unless --log-level asks for more; a configuration file's log_level is the service's.
_SERVICES = frozenset({"run"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvmrec",
        description="Declarative, self-healing reconciling controller for KVM hosts.",
        epilog="Every command finds the state, manifests and libvirt of the running service "
        "the same way, strongest first: --state/--manifests/--connect; $KVMREC_STATE, "
        "$KVMREC_MANIFESTS; the configuration file (--config, else $KVMREC_CONFIG, else "
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
    for module in _COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # `kvmrec status | head` should stop quietly, as other Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    logs.quiet(args.command not in _SERVICES and "log_level" not in config.given(args))
    logs.setup(args.log_level, args.log_format)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
