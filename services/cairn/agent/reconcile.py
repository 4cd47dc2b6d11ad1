"""The reconcile loop: for each area, desired state (pure) → diff against actual (pure) → apply.

A Reconciler reads what it needs from the store snapshot it is given, so `desired` and `diff` stay
pure and testable; only `actual` and `apply` touch the node. The loop runs every reconciler on each
pass, isolates failures (one broken area does not stop the others), and reports per-area status to
status/<node>/reconcile (written only by that node's agent).
"""

from __future__ import annotations

import logging
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
    at: float


@dataclass
class ReconcileLoop:
    store: Store
    node: str
    reconcilers: list[Reconciler] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def run_once(self) -> dict[str, AreaStatus]:
        report: dict[str, AreaStatus] = {}
        for reconciler in self.reconcilers:
            try:
                actions = reconciler.diff(reconciler.desired(self.store), reconciler.actual())
                if actions:
                    reconciler.apply(actions)
                report[reconciler.name] = AreaStatus(True, len(actions), None, self.clock())
            except CairnError as exc:
                report[reconciler.name] = AreaStatus(False, 0, exc.message, self.clock())
            except Exception as exc:
                log.exception("reconciler %s crashed", reconciler.name)
                report[reconciler.name] = AreaStatus(False, 0, f"internal error: {exc}", self.clock())
        self.store.put(f"status/{self.node}/reconcile",
                       {name: vars(status) for name, status in report.items()})
        return report
