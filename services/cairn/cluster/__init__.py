"""Cairn cluster."""
