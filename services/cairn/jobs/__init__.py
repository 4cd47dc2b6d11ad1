"""Cairn jobs."""
