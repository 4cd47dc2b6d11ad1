"""The cluster store's health as the dashboard shows it: members, roles, leader, quorum, and what
losing one more node would do.

`cluster_health` asks etcd (the member list, then each member's status at its own client URL,
timed for the round trip) and hands plain data to `summarise`, which decides everything shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cairn.cluster import membership
from cairn.cluster.store import Member, MemberStatus, Store
from cairn.errors import Unavailable

STATUS_TIMEOUT = 1.0        # seconds a member gets to answer its status request


@dataclass(frozen=True)
class Probe:
    """One member's answer (or silence) to a status request."""
    member_id: str
    status: MemberStatus | None
    rtt_ms: float | None
    error: str = ""


def summarise(members: list[Member], probes: list[Probe]) -> dict[str, Any]:
    """The health view of the store (pure); members by name, those not started yet last."""
    by_id = {probe.member_id: probe for probe in probes}
    leaders = {probe.status.leader for probe in probes if probe.status and probe.status.leader not in ("", "0")}
    leader = leaders.pop() if len(leaders) == 1 else ""
    states, rows = [], []
    for member in sorted(members, key=lambda m: (m.name == "", m.name, m.member_id)):
        probe = by_id.get(member.member_id)
        answered = bool(probe and probe.status)
        states.append(membership.MemberState(member.member_id, member.name, not member.learner, answered))
        rows.append({
            "id": member.member_id, "name": member.name or "(not started yet)",
            "role": "learner" if member.learner else "voter",
            "leader": member.member_id == leader, "reachable": answered,
            "peer_urls": member.peer_urls, "client_urls": member.client_urls,
            "rtt_ms": round(probe.rtt_ms, 2) if answered and probe.rtt_ms is not None else None,
            "db_size": probe.status.db_size if answered else None,
            "version": probe.status.version if answered else None,
            "error": probe.error if probe and not answered else "",
        })
    return {"members": rows, "leader": leader, "quorum": membership.tolerance(states),
            "roles": membership.role_reason(len(members))}


def cluster_health(store: Store, clock=time.monotonic) -> dict[str, Any]:
    members = store.members()
    probes = []
    for member in members:
        if not member.client_urls:
            probes.append(Probe(member.member_id, None, None, "not started yet"))
            continue
        started = clock()
        try:
            status = store.status_at(member.client_urls[0], timeout=STATUS_TIMEOUT)
            probes.append(Probe(member.member_id, status, (clock() - started) * 1000))
        except Unavailable as exc:
            probes.append(Probe(member.member_id, None, None, exc.message))
    return summarise(members, probes)
