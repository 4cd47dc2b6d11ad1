"""Cairn system."""
