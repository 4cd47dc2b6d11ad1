"""Cairn web."""
