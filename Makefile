# Cairn — the two commands: `make run` and `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := build/stamps
PORT ?= 8443

# Every Debian package the tests and the dev stack need (one list).
APT_PACKAGES := etcd-server etcd-client chromium python3-venv python3-dev btrfs-progs \
	iproute2 util-linux fonts-dejavu-core ca-certificates samba-common-bin \
	samba smbclient libnss-wrapper acl mtools dosfstools \
	libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils ovmf \
	libvirt-dev pkg-config gcc libxml2-utils novnc \
	xorriso isolinux

.PHONY: test unit e2e dev bench deps apt venv clean

# The whole suite: unit, meta, host (real etcd/processes), browser, and e2e (booted appliances).
# Each phase is timed and the times are printed at the end (tests/phases.py). CAIRN_STRICT_SKIPS:
# a test skipped because a tool or build product is missing fails the run (tests/environment.py).
PHASE := $(PYTHON) tests/phases.py
PYTEST_ARGS := -q -ra --durations=15
PYTEST_PATHS := tests/unit tests/meta tests/host tests/browser tests/e2e
# Every apt install comes first (one phase), then the builds; the image and the guest build one
# after the other (side by side, -j2, was no faster on 2 cores: both are mostly CPU).
test:
	@$(PHASE) begin
	@$(PHASE) run "apt + venv" -- $(MAKE) --no-print-directory deps image-deps guest-deps testbed-deps
	@$(PHASE) run image -- $(MAKE) --no-print-directory image
	@$(PHASE) run guest -- $(MAKE) --no-print-directory guest
	@$(PHASE) run --last pytest -- env CAIRN_STRICT_SKIPS=1 $(PY) -m pytest $(PYTEST_PATHS) $(PYTEST_ARGS)

e2e:
	@$(PHASE) begin
	@$(PHASE) run "apt + venv" -- $(MAKE) --no-print-directory deps image-deps guest-deps testbed-deps
	@$(PHASE) run image -- $(MAKE) --no-print-directory image
	@$(PHASE) run guest -- $(MAKE) --no-print-directory guest
	@$(PHASE) run --last pytest -- env CAIRN_STRICT_SKIPS=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

unit: deps
	$(PY) -m pytest tests/unit tests/meta -q

dev: deps
	$(VENV)/bin/cairn-devstack --state build/dev --port $(PORT)

bench: deps
	$(PY) tests/bench/bench_api.py
	$(PY) tests/bench/bench_store.py
	$(PY) tests/bench/bench_web.py
	$(PY) tests/bench/bench_storage.py
	$(PY) tests/bench/bench_vms.py

deps: $(STAMPS)/apt $(STAMPS)/venv

apt: $(STAMPS)/apt
$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: services/pyproject.toml tests/requirements.txt $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e services -r tests/requirements.txt
	@touch $@

clean:
	rm -rf build/dev build/test-artifacts

# `make image` (the appliance image), `make guest` (the tiny test guest), `make run` (boot the
# appliance in QEMU) and `make cluster` (N appliances on private networks).
include image/image.mk
include image/guest/guest.mk
include qemu-testbed/testbed.mk
