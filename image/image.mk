# image/image.mk: the appliance image (issue 3). Included from the top-level Makefile.
#
#   make image            build/cairn-$(VERSION)-amd64.img (raw GPT, UEFI) + .qcow2; skipped when
#                         image/, rootfs/ and services/ are unchanged (the base rootfs is cached by
#                         package list in the machine-wide /var/cache/cairn-build/base/, shared by every
#                         clone here, so a code-only change or a fresh clone takes well under a minute;
#                         CAIRN_BUILD_CACHE=DIR moves that cache)
#   make image-force      rebuild even if nothing changed
#   make image-compressed also write build/cairn-$(VERSION)-amd64-compressed.qcow2 (for download)
#   make image-deps       the Debian packages the build and `make run` need (idempotent)
#
# Needs root (mmdebstrap --mode=root, chroot). Nothing is mounted through loop devices; no KVM.

IMAGE_PYTHON ?= /usr/bin/python3
VERSION ?= $(shell $(IMAGE_PYTHON) image/build.py version)
IMAGE := build/cairn-$(VERSION)-amd64.img
IMAGE_QCOW2 := build/cairn-$(VERSION)-amd64.qcow2

# Host packages: the build's own list lives in image/build.py (HOST_PACKAGES); `make run` adds QEMU + OVMF.
IMAGE_RUN_PACKAGES := qemu-system-x86 ovmf openssh-client

.PHONY: image image-force image-compressed image-deps image-base

image-deps:
	@$(IMAGE_PYTHON) image/build.py deps
	@missing=$$(for p in $(IMAGE_RUN_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

image: image-deps
	$(IMAGE_PYTHON) image/build.py build --version $(VERSION)

image-force: image-deps
	$(IMAGE_PYTHON) image/build.py build --version $(VERSION) --force

image-compressed: image-deps
	$(IMAGE_PYTHON) image/build.py build --version $(VERSION) --force --compress

image-base: image-deps
	$(IMAGE_PYTHON) image/build.py base
