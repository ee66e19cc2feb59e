# kvmrec: `make run` on a fresh Debian host installs what is needed, brings up the local
# stack (libvirtd, OVS, etcd) and runs the controller on manifests/examples;
# `make test` does the same set-up and runs the whole test suite against the real stack.

SHELL := /bin/bash
# The distribution's interpreter: Debian builds it with profile-guided and link-time
# optimisation into one binary, where a default pyenv or source build is neither (kvmrec's
# reconcile loop runs ~10% faster on it; bench/RESULTS.md). PYTHON=... picks another one,
# in a fresh venv (`make clean venv`).
PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STACK_ENV := .stack/env
MANIFESTS ?= manifests/examples
STATE ?= .state/state.db
DEV_CONFIG := .state/config.yaml
PYTEST_ARGS ?= --durations=10  # the slowest tests in every log: where the suite's time goes
TEST_WORKERS ?= 3

.PHONY: run test unit integration lint bench stack-up stack-down stack-status venv clean guest-image \
	lab-up lab-down lab-status
LAB_HOSTS ?= 3

stack-up:
	bash scripts/real-stack.sh up

stack-down:
	bash scripts/real-stack.sh down

stack-status:
	bash scripts/real-stack.sh status

# The fleet tests' lab: $(LAB_HOSTS) libvirt hosts on this machine, each in a mount
# namespace of its own, beside the system libvirtd (scripts/lab.sh; root dir
# $${KVMREC_LAB_DIR:-/var/lib/kvmrec-lab}). It needs the stack's packages, not its daemons.
lab-up:
	bash scripts/real-stack.sh packages
	bash scripts/lab.sh up $(LAB_HOSTS)

lab-down:
	bash scripts/lab.sh down $(LAB_HOSTS)

lab-status:
	bash scripts/lab.sh status $(LAB_HOSTS)

# A tiny real Linux guest (Debian kernel + busybox + qemu-ga) for the agent tests,
# cached under $${KVMREC_TEST_GUEST_DIR:-/var/cache/kvmrec/test-guest}.
guest-image:
	bash scripts/test-guest.sh build

# libvirt-python compiles against libvirt-dev, which stack-up installs: keep that order.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	bash scripts/real-stack.sh packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	bash scripts/ovs-c-json.sh $(BIN)/python
	touch $@

# The dev run's settings go into a configuration file that every kvmrec command finds
# through $$KVMREC_CONFIG, so `kvmrec snapshot`, `status`, ... in another shell use the
# service's state and manifests (export the line it prints there).
run: stack-up venv
	mkdir -p $(dir $(DEV_CONFIG))
	set -a && source $(STACK_ENV) && set +a && \
	printf 'manifests: %s\nstate: %s\nconnect: %s\novsdb: %s\n' \
		'$(abspath $(MANIFESTS))' '$(abspath $(STATE))' "$$LIBVIRT_DEFAULT_URI" \
		"$${KVMREC_OVSDB:-unix:/run/openvswitch/db.sock}" > $(DEV_CONFIG) && \
	chmod 644 $(DEV_CONFIG) && \
	echo "kvmrec: for the other commands, in your shell: export KVMREC_CONFIG=$(abspath $(DEV_CONFIG))" && \
	KVMREC_CONFIG=$(abspath $(DEV_CONFIG)) $(BIN)/kvmrec run

# The suite in two runs: most of it spread over $(TEST_WORKERS)
# workers (pytest-xdist, one module to a worker: most tests wait on guests and leases, not
# on the CPU), then, one at a time, the tests that stop or restart a daemon of the stack
# and those a loaded host would make flaky or that load it most (the markers in
# pyproject.toml).
test: stack-up venv guest-image lab-up
	set -a && source $(STACK_ENV) && set +a && \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not disruptive and not quiet and not heavy" \
		$(PYTEST_ARGS) tests && \
	$(BIN)/python -m pytest -m "disruptive or quiet or heavy" $(PYTEST_ARGS) tests

unit: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests/unit

integration: stack-up venv guest-image lab-up
	set -a && source $(STACK_ENV) && set +a && \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not disruptive and not quiet and not heavy" \
		$(PYTEST_ARGS) tests/integration && \
	$(BIN)/python -m pytest -m "disruptive or quiet or heavy" $(PYTEST_ARGS) tests/integration

lint: venv
	$(BIN)/ruff check controller tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: stack-up venv guest-image
	set -a && source $(STACK_ENV) && set +a && \
	$(BIN)/python bench/converge.py --connect test:///default -n 1000 && \
	$(BIN)/python bench/converge.py --connect qemu:///system -n 20 && \
	$(BIN)/python bench/guest_agent.py

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
