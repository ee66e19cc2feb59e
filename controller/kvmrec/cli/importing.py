"""``kvmrec import NAME``: a manifest for a domain kvmrec does not manage yet.

It describes the domain as it is, with only the fields a manifest holds, and carries the
``kvmrec.io/adopt: "true"`` annotation: dropped into the manifest directory, kvmrec takes
the domain over without changing it (``kvmrec plan`` on it shows the adoption and nothing
else). It says ``deletionPolicy: Orphan``, with a comment on the alternative: removing the
manifest then gives the guest back as it is; ``Delete`` would destroy and undefine a guest
kvmrec never created. Anything the Domain kind cannot express is listed on stderr, since
kvmrec would drop it on the first change it writes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from kvmrec import config
from kvmrec.api import schema
from kvmrec.backends import domain_xml
from kvmrec.backends.errors import BackendError
from kvmrec.backends.libvirt.hypervisor import Hypervisor
from kvmrec.cli import where
from kvmrec.reconcilers.adoption import manifest_for

_POLICY_LINE = "  deletionPolicy: Orphan\n"
_POLICY_COMMENT = (
    "  # Orphan: removing this manifest removes only kvmrec's stamp and leaves the guest as\n"
    "  # it is. Delete would destroy and undefine it (a guest kvmrec did not create).\n"
)


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "import", help="print a manifest that adopts an existing domain"
    )
    parser.add_argument("name", help="the libvirt domain")
    parser.add_argument("--connect", default=None, help="libvirt URI")
    config.add_option(parser)  # the service's libvirt, unless --connect says otherwise
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    hypervisor = Hypervisor(where.cli_settings(args).connect)
    try:
        hypervisor.open()
        live = hypervisor.get_domain(args.name)
        xml = hypervisor.domain_xml(args.name) if live is not None else ""
    except BackendError as exc:
        print(f"kvmrec import: {exc}", file=sys.stderr)
        return 1
    finally:
        hypervisor.close()
    if live is None:
        print(f"kvmrec import: no domain named {args.name}", file=sys.stderr)
        return 1
    manifest = manifest_for(live)
    problems = [
        f"{p.field}: {p.reason}" for p in schema.validate(schema.registry()["Domain"], manifest)
    ]
    if problems:
        print(
            f"kvmrec import: {args.name} cannot be described: {'; '.join(problems)}",
            file=sys.stderr,
        )
        return 1
    for what in domain_xml.unmodelled(xml):
        print(
            f"kvmrec import: warning: {args.name} has {what}, which a manifest cannot "
            "express; kvmrec would drop it on the first change it writes",
            file=sys.stderr,
        )
    if live.config.owner is not None:
        print(f"kvmrec import: note: {args.name} already carries kvmrec's stamp", file=sys.stderr)
    print(commented(yaml.safe_dump(manifest, sort_keys=False)), end="")
    return 0


def commented(text: str) -> str:
    """The dumped manifest with the deletion policy explained where it is set."""
    assert _POLICY_LINE in text, "the imported manifest sets deletionPolicy: Orphan"
    return text.replace(_POLICY_LINE, _POLICY_COMMENT + _POLICY_LINE, 1)
