"""Cairn: a Debian-based NAS appliance OS with a built-in KVM cluster."""

__version__ = "0.1.0"
