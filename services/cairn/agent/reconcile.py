"""The reconcile loop: for each area, desired state (pure) → diff against actual (pure) → apply.

A Reconciler reads what it needs from the store snapshot it is given, so `desired` and `diff` stay
pure and testable; only `actual` and `apply` touch the node. The loop runs every reconciler on each
pass (or only the areas named, when a watch saw their records change), one pass at a time,
isolates failures (one broken area does not stop the others), and reports per-area status to
status/<node>/reconcile (written only by that node's agent; an area keeps its last report). The
report says whether each area is ok, its error, and since when it has been so — not the time of
each pass — so it is rewritten only when an area's state changes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from cairn.cluster.store import Store
from cairn.errors import CairnError

log = logging.getLogger(__name__)


class Reconciler(Protocol):
    name: str

    def desired(self, store: Store) -> Any: ...
    def actual(self) -> Any: ...
    def diff(self, desired: Any, actual: Any) -> list[Any]: ...
    def apply(self, actions: list[Any]) -> None: ...


@dataclass
class AreaStatus:
    ok: bool
    actions: int
    error: str | None
    at: float                   # this pass
    since: float = 0.0          # first pass with this (ok, error); published

    def __post_init__(self) -> None:
        self.since = self.since or self.at


@dataclass
class ReconcileLoop:
    store: Store
    node: str
    reconcilers: list[Reconciler] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _report: dict[str, AreaStatus] = field(default_factory=dict, repr=False)

    def run_once(self, only: set[str] | None = None) -> dict[str, AreaStatus]:
        with self._lock:
            return self._run(only)

    def _run(self, only: set[str] | None) -> dict[str, AreaStatus]:
        report: dict[str, AreaStatus] = {}
        for reconciler in self.reconcilers:
            if only is not None and reconciler.name not in only:
                continue
            try:
                actions = reconciler.diff(reconciler.desired(self.store), reconciler.actual())
                if actions:
                    reconciler.apply(actions)
                finish = getattr(reconciler, "after_pass", None)
                if finish is not None:
                    finish()                   # status publishing, clean-up after a good pass
                report[reconciler.name] = AreaStatus(True, len(actions), None, self.clock())
            except CairnError as exc:
                report[reconciler.name] = AreaStatus(False, 0, exc.message, self.clock())
            except Exception as exc:
                log.exception("reconciler %s crashed", reconciler.name)
                report[reconciler.name] = AreaStatus(False, 0, f"internal error: {exc}", self.clock())
        for name, status in report.items():
            before = self._report.get(name)
            if before is not None and (before.ok, before.error) == (status.ok, status.error):
                status.since = before.since
        self._report.update(report)
        self.store.put_if_changed(f"status/{self.node}/reconcile", {
            name: {"ok": status.ok, "error": status.error, "since": status.since}
            for name, status in self._report.items()})
        return report
