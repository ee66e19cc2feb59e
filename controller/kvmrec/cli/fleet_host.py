"""``run --host NAME --label KEY=VALUE``: who this hypervisor is in a fleet.

Only a store that several hosts share (``etcd://``) has hosts, so ``--host`` and
``--label`` go with one, and such a store needs ``--host``: a name, as a manifest's
``metadata.name`` is spelt, that a Domain's ``spec.host`` can pin it by, and labels its
``spec.hostSelector`` can match. Both are checked here, before anything starts.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kvmrec.api import selectors
from kvmrec.settings import Settings

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _label(text: str) -> tuple[str, str]:
    try:
        return selectors.label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host name (lower-case letters, digits and '-', at most 63, "
            "starting and ending with a letter or digit)"
        )
    return text


class _Labels(argparse.Action):
    """Gathers ``--label`` into a mapping (the ``labels`` setting); a key given twice with
    two values is a usage error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        key, value = values
        labels = dict(getattr(namespace, self.dest, None) or {})
        if labels.get(key, value) != value:
            parser.error(f"--label {key}: given twice ({labels[key]}, {value})")
        labels[key] = value
        setattr(namespace, self.dest, MappingProxyType(labels))


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--migration-uri",
        default=None,
        metavar="URI",
        help="the URI other hosts' libvirtd reach this one's by for live migration "
        "(default: --connect)",
    )
    parser.add_argument(
        "--migration-address",
        default=None,
        metavar="ADDRESS",
        help="the address migration streams to this host connect to (default: its name)",
    )
    parser.add_argument(
        "--shared-storage",
        type=Path,
        action="append",
        default=None,
        metavar="DIR",
        help="a directory every host sees at the same path (repeatable): disks there are "
        "not copied when a guest migrates",
    )
    parser.add_argument(
        "--migration-stall-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cancel a migration whose data remaining has not decreased for this long "
        "(default 150)",
    )
    parser.add_argument(
        "--host",
        type=_host,
        default=None,
        metavar="NAME",
        help="this hypervisor's name in a fleet (with --store etcd://...)",
    )
    parser.add_argument(
        "--label",
        dest="labels",
        type=_label,
        action=_Labels,
        default=None,
        metavar="KEY=VALUE",
        help="a label of this hypervisor, for placement (repeatable; with --host)",
    )


def problem(settings: Settings) -> str | None:
    """What is wrong with the store, ``--host`` and ``--label`` together, if anything."""
    fleet = settings.store is not None and settings.store.startswith("etcd://")
    if fleet and settings.host is None:
        return f"{settings.store}: a fleet host needs --host NAME"
    if not fleet and (settings.host is not None or settings.labels):
        return "--host and --label name a host of a fleet: they need --store etcd://..."
    return None
