"""Job kinds: what a job of each kind needs (params check, locks) and the function that runs it.

Handlers register with `@job_kind(...)` in their own area (e.g. cairn.system.diagnostics) and are
imported by `load_all()`, which the agent and the web server call at start.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from cairn.errors import ValidationError

Handler = Callable[[Any, dict[str, Any]], dict[str, Any]]   # (JobContext, params) -> result

# Modules that define job kinds; importing them registers the kinds.
KIND_MODULES = ("cairn.system.diagnostics", "cairn.storage.jobs", "cairn.compute.jobs", "cairn.cluster.formation",
                "cairn.cluster.departure")


@dataclass(frozen=True)
class JobKind:
    name: str
    title: str                                              # e.g. "Diagnostics of {node}"
    handler: Handler
    check_params: Callable[[dict[str, Any]], dict[str, Any]]  # returns normalized params or raises
    locks: Callable[[str, dict[str, Any]], list[str]]       # (node, params) -> lock names
    abortable: bool


_KINDS: dict[str, JobKind] = {}


def job_kind(name: str, *, title: str, check_params: Callable[[dict[str, Any]], dict[str, Any]],
             locks: Callable[[str, dict[str, Any]], list[str]] = lambda node, params: [],
             abortable: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _KINDS[name] = JobKind(name, title, handler, check_params, locks, abortable)
        return handler
    return register


def get_kind(name: str) -> JobKind:
    load_all()
    try:
        return _KINDS[name]
    except KeyError:
        raise ValidationError({"kind": f"unknown job kind {name!r}"}) from None


def kinds() -> list[str]:
    load_all()
    return sorted(_KINDS)


def load_all() -> None:
    for module in KIND_MODULES:
        importlib.import_module(module)
