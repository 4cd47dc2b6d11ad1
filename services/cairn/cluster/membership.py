"""Who votes in the cluster store, and whether a membership change is safe (pure decisions).

etcd keeps working while a majority of its voting members ("quorum") answer. Cairn's rule:
  - 1 node: it votes alone;
  - 2 nodes: both vote (losing either stops all changes; HA needs three nodes);
  - 3–4 nodes: 3 voters (one may be lost), the fourth node is a learner;
  - 5–7 nodes: 5 voters (two may be lost), the others are learners.
A learner receives every change but does not vote, so it never weakens quorum; it is promoted when
a voter is wanted. Membership changes one step at a time (add a learner, promote it, remove a
member), and only a step after which the members that answer still make a quorum.

Everything here works on plain data (`MemberState`) and returns decisions; etcd is asked and
changed by the callers, through Store.members/member_add/member_promote/member_remove.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.errors import Conflict, PreconditionFailed


@dataclass(frozen=True)
class MemberState:
    member_id: str
    node: str               # node id (machine-id) the member runs on; "" until it started
    voter: bool             # False: a learner
    healthy: bool           # answered a status request just now
    caught_up: bool = True  # a learner whose log is close enough to the leader's to be promoted


@dataclass(frozen=True)
class Step:
    action: str             # "promote" | "remove" | "none"
    member_id: str = ""
    why: str = ""


def voters_wanted(nodes: int) -> int:
    if nodes <= 2:
        return max(nodes, 1)
    return 3 if nodes <= 4 else 5


def quorum(voters: int) -> int:
    return voters // 2 + 1


def role_reason(nodes: int) -> str:
    wanted = voters_wanted(nodes)
    if nodes == 1:
        return "a single node votes alone"
    if nodes == 2:
        return "both nodes vote: losing either stops all changes until it is back; HA needs three nodes"
    return (f"{wanted} of {nodes} nodes vote (a majority of {quorum(wanted)} must answer); the others are "
            "learners: they hold every change and are promoted when a voter is lost for good")


def tolerance(members: list[MemberState]) -> dict[str, object]:
    """What the cluster store can lose now: for the console's "what losing one more node would do"."""
    voters = [m for m in members if m.voter]
    up = [m for m in voters if m.healthy]
    need = quorum(len(voters)) if voters else 1
    spare = len(up) - need
    if spare < 0:
        text = (f"no quorum: {len(up)} of {len(voters)} voting members answer, {need} are needed; "
                "the cluster refuses changes until enough of them are back")
    elif spare == 0:
        text = ("losing one more voting member stops all changes (the consoles then answer 503) "
                "until it is back")
    else:
        text = f"{spare} more voting member{'s' if spare > 1 else ''} can be lost and the cluster keeps working"
    return {"voters": len(voters), "voters_up": len(up), "quorum": need, "can_lose": max(spare, 0),
            "has_quorum": spare >= 0, "text": text}


def check_keeps_quorum(members: list[MemberState], removing: str | None = None,
                       adding_voter: bool = False) -> None:
    """Refuse (PreconditionFailed, nothing changed) a step after which the answering voters would
    not be a majority of the voters."""
    voters = [m for m in members if m.voter and m.member_id != removing]
    up = sum(1 for m in voters if m.healthy)
    total = len(voters) + (1 if adding_voter else 0)
    if total == 0:
        raise PreconditionFailed("the last voting member cannot be removed: the cluster store would be gone")
    if up < quorum(total):
        raise PreconditionFailed(
            f"this change would leave {up} of {total} voting members answering, fewer than the "
            f"{quorum(total)} needed; bring the down members back (or remove them) first")


def next_step(members: list[MemberState], nodes: int) -> Step:
    """The one membership step to take now to reach Cairn's rule for `nodes` nodes, if any.

    Promotion only of a healthy learner that has caught up; a surplus voter is never demoted (etcd
    cannot demote; a voter goes only when its node leaves or is removed)."""
    voters = [m for m in members if m.voter]
    wanted = voters_wanted(nodes)
    if len(voters) < wanted:
        ready = sorted((m for m in members if not m.voter and m.healthy and m.caught_up and m.node),
                       key=lambda m: m.node)
        if ready:
            return Step("promote", ready[0].member_id,
                        f"{len(voters)} voting members, {wanted} wanted for {nodes} nodes")
    return Step("none")


def check_one_change_at_a_time(members: list[MemberState]) -> None:
    """etcd changes one member at a time: a member added but not started yet (no name) must start
    (or be removed) before the next change."""
    pending = [m.member_id for m in members if not m.node]
    if pending:
        raise Conflict(f"another membership change is under way (member {pending[0]} has not started "
                       "yet); try again when it has joined, or remove it")
