# image/guest/guest.mk: the tiny test guest (issue 4, item 3). Included from the top-level Makefile.
#
#   make guest          build/guest/cairn-testguest.img (64 MiB raw, MBR, BIOS/syslinux boot, heartbeat);
#                       skipped when its inputs are unchanged; the kernel is compiled once per machine and
#                       cached in /var/cache/cairn-build/guest-kernel/<hash of kernel.config + source
#                       version>/ (CAIRN_BUILD_CACHE=DIR moves it), which every clone here shares
#   make guest-force    rebuild the disk even if nothing changed (the cached kernel is reused)
#   make guest-kernel   build (or reuse) only the cached kernel
#   make guest-deps     the Debian packages the build needs (idempotent; apt only when one is missing)
#
# Needs root only for apt. Nothing is mounted, no loop devices, no KVM.

GUEST_PYTHON ?= /usr/bin/python3
GUEST_IMAGE := build/guest/cairn-testguest.img

.PHONY: guest guest-force guest-kernel guest-deps

guest-deps:
	@$(GUEST_PYTHON) image/guest/build.py deps

guest: guest-deps
	$(GUEST_PYTHON) image/guest/build.py build

guest-force: guest-deps
	$(GUEST_PYTHON) image/guest/build.py build --force

guest-kernel: guest-deps
	$(GUEST_PYTHON) image/guest/build.py kernel
