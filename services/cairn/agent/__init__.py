"""Cairn agent."""
