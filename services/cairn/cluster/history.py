"""The history keeper: keeps the cluster store small for years.

Every agent runs `HistoryKeeper.run_once` every `interval` seconds. It does two things:

1. Prunes job and event history (jobs.service.JobService.prune, events.prune) by age and count.
   One node does it per interval: the first to create `history-keeper` (bound to a lease of the
   interval's length) wins the round. Two nodes pruning at once would only delete the same keys.
2. Looks after its own etcd member (endpoint 0 of the node's configuration: the local member):
   defragments it when its file is mostly free pages (etcd_settings.needs_defragment), one member
   of the cluster at a time (the `etcd-defrag` lock, bound to a lease), and raises one event when
   the database nears the quota (and one when it is back under).

etcd compacts old revisions by itself (etcd_settings: auto-compaction); that frees pages inside
the file, and defragmenting gives them back to the file system.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from cairn.cluster import etcd_settings, events
from cairn.cluster.store import Store
from cairn.config import HistoryConfig
from cairn.errors import CairnError
from cairn.jobs.service import JobService

log = logging.getLogger(__name__)

ROUND_KEY = "history-keeper"
DEFRAG_KEY = "etcd-defrag"
DEFRAG_LEASE = 600


HistorySettings = HistoryConfig       # the [history] table of the node's config


@dataclass
class RoundReport:
    pruned: bool = False
    jobs_deleted: int = 0
    events_deleted: int = 0
    defragmented: bool = False
    db_size: int = 0
    db_size_in_use: int = 0
    warning: str | None = None


class HistoryKeeper:
    def __init__(self, store: Store, node: str, settings: HistorySettings = HistorySettings(),
                 clock: Callable[[], float] = time.time, quota: int = etcd_settings.QUOTA_BYTES) -> None:
        self.store = store
        self.node = node
        self.settings = settings
        self.clock = clock
        self.quota = quota
        self._warned = False

    def run_once(self) -> RoundReport:
        report = RoundReport()
        if self._win_round():
            report.pruned = True
            report.jobs_deleted = JobService(self.store, self.clock).prune(
                keep_days=self.settings.job_keep_days, keep_count=self.settings.job_keep_count)
            report.events_deleted = events.prune(self.store, now=self.clock(),
                                                 keep_days=self.settings.event_keep_days,
                                                 keep_count=self.settings.event_keep_count)
            if report.jobs_deleted or report.events_deleted:
                log.info("history: deleted %d jobs and %d events", report.jobs_deleted, report.events_deleted)
        self._look_after_member(report)
        return report

    def _win_round(self) -> bool:
        return bool(self.store.claim(ROUND_KEY, {"node": self.node, "at": self.clock()},
                                     max(10, int(self.settings.interval) - 5)))

    def _look_after_member(self, report: RoundReport) -> None:
        status = self.store.member_status(0)
        report.db_size, report.db_size_in_use = status.db_size, status.db_size_in_use
        if etcd_settings.needs_defragment(status.db_size, status.db_size_in_use):
            lease = self.store.claim(DEFRAG_KEY, {"node": self.node, "member": status.member_id}, DEFRAG_LEASE)
            if lease:
                try:
                    started = time.monotonic()
                    self.store.defragment(0)
                    report.defragmented = True
                    after = self.store.member_status(0)
                    log.info("defragmented the local etcd member: %d → %d bytes in %.1f s",
                             status.db_size, after.db_size, time.monotonic() - started)
                    report.db_size, report.db_size_in_use = after.db_size, after.db_size_in_use
                finally:
                    self.store.revoke_lease(lease)
        report.warning = etcd_settings.quota_warning(report.db_size, self.quota)
        if report.warning and not self._warned:
            events.emit(self.store, severity="warning", node=self.node, source="store",
                        message=f"on {self.node}: {report.warning}", clock=self.clock)
        elif not report.warning and self._warned:
            events.emit(self.store, severity="info", node=self.node, source="store",
                        message=f"on {self.node}: the cluster store's database is back under "
                                f"{etcd_settings.QUOTA_WARN_FRACTION:.0%} of its quota", clock=self.clock)
        self._warned = report.warning is not None



def store_health(store: Store, quota: int | None = None) -> dict:
    """What the console shows of the cluster store: the local member's database size against the
    quota, active alarms, and a warning sentence when something needs the admin (or None)."""
    quota = etcd_settings.QUOTA_BYTES if quota is None else quota
    status = store.member_status(0)
    alarms = store.alarms()
    warning = etcd_settings.quota_warning(status.db_size, quota)
    if any(alarm["alarm"] == "NOSPACE" for alarm in alarms):
        warning = ("the cluster store has reached its quota and refuses every change: delete old jobs, "
                   "events or other records, defragment it, then clear the NOSPACE alarm")
    return {"db_size": status.db_size, "db_size_in_use": status.db_size_in_use, "quota": quota,
            "revision": status.revision, "version": status.version,
            "alarms": [alarm["alarm"] for alarm in alarms], "warning": warning}
