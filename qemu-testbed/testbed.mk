# qemu-testbed/testbed.mk: `make run` (issue 3). Included from the top-level Makefile after image/image.mk.
#
#   make run              boot the appliance (2 vCPU, 4 GiB, 4 data disks; console on 127.0.0.1:8443,
#                         SSH on 127.0.0.1:2222, or the next free ports); resumes the previous one
#   make run FRESH=1      throw the previous appliance (build/run/) away and start a new one
#   make run RUN_ARGS="--accel tcg --exit-when-ready"   any option of `python3 -m cairn_testbed.run -h`
#
# Ctrl-C shuts the appliance down cleanly (ACPI power button over QMP); a second Ctrl-C pulls the plug.

RUN_ARGS ?=

.PHONY: run
run: image
	PYTHONPATH=qemu-testbed $(IMAGE_PYTHON) -m cairn_testbed.run --image $(IMAGE_QCOW2) \
		$(if $(filter 1 yes true,$(FRESH)),--fresh) $(RUN_ARGS)

# `make cluster`: three appliances (NODES=n for another count) on private networks; Ctrl-C tears down.
NODES ?= 3
TESTBED_PACKAGES := dnsmasq-base iproute2 openssh-client

.PHONY: cluster testbed-deps
testbed-deps:
	@missing=$$(for p in $(TESTBED_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

cluster: image testbed-deps
	PYTHONPATH=qemu-testbed $(IMAGE_PYTHON) -m cairn_testbed.cluster --nodes $(NODES)
