"""File-access users and groups as the node's Unix accounts and Samba passdb entries (pure: parse
what the node has, compare with the records, return the commands that make them agree).

Invariants:
- On a Cairn node, user and group ids from model.FIRST_ID to model.LAST_ID belong to Cairn: an
  account in that range that no record names is removed, one outside it is never touched (the
  system's and the packages' accounts live below 1000 or at 65534).
- Every file user has the primary group `users` (gid 100, in every Debian system) and its Cairn
  groups as supplementary groups; no home directory and no login shell. File access comes from
  ACL entries per user (acl.py), never from the primary group.
- Samba's passdb holds exactly the enabled and disabled file users, each with the NT hash of the
  record (the password itself is never stored anywhere); disabled users carry the `D` flag.
- The NT hash is password-equivalent, so it never appears on a command line (any process can read
  those in /proc): a user's passdb entry is written by importing one smbpasswd-format line that
  pdbedit reads from stdin (`pdbedit -i smbpasswd:/dev/stdin -u NAME`, which adds or replaces the
  entry: hash, flags and the time the password was set). pdbedit reads that file twice and exits 0
  even when it refused the line, so stdin is an in-memory file (Runner's input_file) and the step
  expects pdbedit's "Importing account for NAME...ok".
- Accounts named by a record the node could not use (`keep_users`, `keep_groups`: a record that
  got into the store without the API's checks) are left as they are, never removed for it.
- Commands take `--prefix` when the accounts live under another root (tests), so the host's own
  /etc/passwd is never changed by a test.

The order matters and is fixed: groups are added before the users that join them, users are
removed before the groups they were in, and passdb entries are added after the Unix account they
need (pdbedit refuses a user without one) and removed before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cairn.shares.model import FIRST_ID, LAST_ID, Group, User

PRIMARY_GROUP = "users"
HOME = "/nonexistent"
SHELL = "/usr/sbin/nologin"


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int
    gecos: str


@dataclass(frozen=True)
class UnixGroup:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class PassdbEntry:
    name: str
    uid: int
    nt_hash: str                 # upper-case hex, as pdbedit prints it
    flags: str                   # the letters between the brackets, e.g. "U" or "DU"

    @property
    def disabled(self) -> bool:
        return "D" in self.flags


@dataclass(frozen=True)
class Step:
    """One command of the plan, with what it is for (shown in logs and errors) and the record it
    serves ("user:<name>", "group:<name>"): when a step fails, the later steps of that record are
    skipped and the others still run."""
    what: str
    argv: tuple[str, ...]
    record: str = ""
    input: str = field(default="", repr=False)     # given on stdin as an in-memory file (a secret)
    expect: str = ""                               # stdout must contain it, or the step failed


def managed(number: int) -> bool:
    return FIRST_ID <= number <= LAST_ID


def parse_passwd(text: str) -> list[UnixUser]:
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        users.append(UnixUser(fields[0], int(fields[2]), int(fields[3]), fields[4]))
    return users


def parse_group(text: str) -> list[UnixGroup]:
    groups = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or not fields[2].isdigit():
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        groups.append(UnixGroup(fields[0], int(fields[2]), members))
    return groups


def parse_pdbedit(text: str) -> list[PassdbEntry]:
    """`pdbedit -L -w`: name:uid:LM hash:NT hash:[flags]:LCT-hex:"""
    entries = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 5 or not fields[1].isdigit():
            continue
        flags = fields[4].strip().strip("[]").replace(" ", "")
        entries.append(PassdbEntry(fields[0], int(fields[1]), fields[3].upper(), flags))
    return entries


def _prefix(prefix: str) -> tuple[str, ...]:
    return () if prefix in ("", "/") else ("--prefix", prefix)


def plan_accounts(users: dict[str, User], groups: dict[str, Group], unix_users: list[UnixUser],
                  unix_groups: list[UnixGroup], prefix: str = "/", keep_users: Iterable[str] = (),
                  keep_groups: Iterable[str] = ()) -> list[Step]:
    """Commands that make the managed Unix accounts match the records (accounts named in
    `keep_users` and `keep_groups` are left alone)."""
    kept_users, kept_groups = set(keep_users), set(keep_groups)
    have_users = {u.name: u for u in unix_users if managed(u.uid) and u.name not in kept_users}
    have_groups = {g.name: g for g in unix_groups if managed(g.gid) and g.name not in kept_groups}
    members: dict[str, set[str]] = {g.name: set(g.members) for g in unix_groups}
    pre = _prefix(prefix)
    steps: list[Step] = []

    # A record whose name or id is held by a different account: remove that account first.
    for user in users.values():
        old = have_users.get(user.name)
        if old is not None and old.uid != user.uid:
            steps.append(Step(f"remove user {old.name} (uid {old.uid} changed to {user.uid})",
                              ("userdel", *pre, old.name), f"user:{old.name}"))
            del have_users[old.name]
    for group in groups.values():
        old = have_groups.get(group.name)
        if old is not None and old.gid != group.gid:
            steps.append(Step(f"remove group {old.name} (gid {old.gid} changed to {group.gid})",
                              ("groupdel", *pre, old.name), f"group:{old.name}"))
            del have_groups[old.name]

    for name in sorted(set(have_users) - set(users)):
        steps.append(Step(f"remove user {name}", ("userdel", *pre, name), f"user:{name}"))
    for name in sorted(set(groups) - set(have_groups)):
        group = groups[name]
        steps.append(Step(f"add group {name}", ("groupadd", *pre, "-g", str(group.gid), name), f"group:{name}"))
    for name in sorted(users):
        user = users[name]
        supplementary = ",".join(sorted(g for g in user.groups if g in groups))
        gecos = user.full_name
        old = have_users.get(name)
        if old is None:
            steps.append(Step(f"add user {name}", (
                "useradd", *pre, "-u", str(user.uid), "-g", PRIMARY_GROUP, "-G", supplementary,
                "-M", "-d", HOME, "-s", SHELL, "-c", gecos, name), f"user:{name}"))
            continue
        current = ",".join(sorted(g for g, who in members.items() if name in who and g in groups))
        if current != supplementary or old.gecos != gecos:
            steps.append(Step(f"update user {name}", ("usermod", *pre, "-G", supplementary,
                                                      "-c", gecos, name), f"user:{name}"))
    for name in sorted(set(have_groups) - set(groups)):
        steps.append(Step(f"remove group {name}", ("groupdel", *pre, name), f"group:{name}"))
    return steps


def smbpasswd_line(name: str, uid: int, nt_hash: str, disabled: bool, now: float) -> str:
    """A user's passdb entry as a line of an smbpasswd file (what `pdbedit -i smbpasswd:` reads):
    no LAN Manager hash, the NT hash, the account flags and when the password was set (0 there
    would mean "must change the password now")."""
    flags = ("D" if disabled else "") + "U"
    return f"{name}:{uid}:{'X' * 32}:{nt_hash.upper()}:[{flags:<11}]:LCT-{int(now):08X}:\n"


def plan_passdb(users: dict[str, User], hashes: dict[str, str], entries: list[PassdbEntry],
                conf: str, now: float, keep: Iterable[str] = ()) -> tuple[list[Step], list[Step]]:
    """Commands that make Samba's passdb hold exactly these users with these NT hashes, as
    (removals, to run before the Unix accounts change; additions and updates, to run after).
    `hashes` are the records' NT hashes by user name (hex, any case); `now` is when a password
    set here counts as set. Entries of users Cairn does not manage, or named in `keep`, are left alone."""
    have = {e.name: e for e in entries}
    kept = set(keep)
    removals: list[Step] = []
    steps: list[Step] = []
    base = ("pdbedit", "-s", conf)
    for name in sorted(set(have) - set(users) - kept):
        if managed(have[name].uid):
            removals.append(Step(f"remove {name} from the Samba passdb", (*base, "-x", "-u", name),
                                 f"user:{name}"))
    for name in sorted(users):
        user = users[name]
        wanted = hashes[name].upper()
        entry = have.get(name)
        if entry is None:
            what = f"add {name} to the Samba passdb"
        elif entry.nt_hash != wanted:
            what = f"set {name}'s password"
        elif entry.disabled != user.disabled:
            what = f"{'disable' if user.disabled else 'enable'} {name} in the Samba passdb"
        else:
            continue
        steps.append(Step(what, (*base, "-i", "smbpasswd:/dev/stdin", "-u", name), f"user:{name}",
                          input=smbpasswd_line(name, user.uid, wanted, user.disabled, now),
                          expect=f"Importing account for {name}...ok"))
    return removals, steps
