"""How the fleet's operator commands (migrate, cordon, uncordon, drain) open the fleet."""

from __future__ import annotations

import argparse
import sys

from kvmrec import store as stores
from kvmrec.cli import where
from kvmrec.store.base import StoreError
from kvmrec.store.fleet import FleetControl


def open_control(args: argparse.Namespace) -> FleetControl | None:
    """The fleet of ``--store`` (or the configuration's), or None after saying why not."""
    settings = where.cli_settings(args, warn=False)
    try:
        return stores.open_control(str(settings.store_location))
    except StoreError as exc:
        print(f"{where.command_of(args)}: {exc}", file=sys.stderr)
        return None
