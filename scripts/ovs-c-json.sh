#!/bin/bash
# The venv's Open vSwitch library (PyPI's ovs) parses OVSDB's JSON in pure Python unless its
# C parser, ovs._json, was built, which PyPI's sdist does only against an installed
# libopenvswitch; Debian 12 ships none, but its python3-openvswitch (a dependency of
# openvswitch-switch) carries that parser compiled, the same module. Where Debian's is for
# this interpreter's ABI, the venv's ovs package uses it: an OVSDB connect takes 5 ms of
# CPU instead of 18, and every update the replica receives is parsed in C. Otherwise
# nothing changes: ovs.json falls back to its own parser.
#
# usage: scripts/ovs-c-json.sh VENV_PYTHON
set -euo pipefail
python=$1
if "$python" -c 'import ovs._json' 2>/dev/null; then
    exit 0  # built, or linked before
fi
suffix=$("$python" -c 'import importlib.machinery as m; print(m.EXTENSION_SUFFIXES[0])')
package=$("$python" -c 'import os, ovs; print(os.path.dirname(ovs.__file__))')
debian=/usr/lib/python3/dist-packages/ovs/_json$suffix
if [ ! -e "$debian" ]; then
    echo "ovs-c-json: no $debian; OVSDB's JSON is parsed in Python" >&2
    exit 0
fi
ln -sf "$debian" "$package/_json$suffix"
if ! "$python" -c 'import ovs.json, sys; sys.exit(ovs.json.PARSER != "C")' 2>/dev/null; then
    rm -f "$package/_json$suffix"
    echo "ovs-c-json: $debian does not load here; OVSDB's JSON is parsed in Python" >&2
fi
