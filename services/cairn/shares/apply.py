"""The node side of shares: make this node's accounts, Samba passdb, share directories' ACLs,
smb.conf and NFS exports match the records (a Reconciler for agent/reconcile.py).

Who writes what: the API writes share-users/, share-groups/ and shares/ (service.py); only this
node's agent runs this module, and it only serves shares whose pool belongs to this node and is
mounted here. It writes, under the configured etc root, etc/passwd and etc/group (through
useradd & co.), Samba's passdb (pdbedit), etc/samba/smb.conf, etc/exports.d/cairn.exports and
etc/nfs.conf.d/cairn.conf, the share directories' ACLs, and status/<node>/shares:

    {"served": [share names], "problems": {record key: what is wrong}}     (problems only when any)

written only when it changed (no timestamp in it, so an unchanged node adds no store history).

A pass: `desired` reads the records and checks each one as the API does (`records_from`),
`actual` reads the node, `plan` (pure) renders the files and plans the commands, `apply` carries
them out in a fixed order: smb.conf, share directories, passdb removals, Unix accounts, passdb
additions, ACLs, then the NFS config and exports.

One bad record never stops the others. A record the node cannot use (one that got into the store
without the API's checks: a name ending in a newline, a share smb.conf or exports(5) cannot hold,
a second share on an exported path) is left out and reported under its key; the accounts a bad
user or group record names are left as they are (never removed for it). A step that fails skips
the later steps of its record (a user whose useradd failed gets no passdb entry) and the pass goes
on with the rest. Having applied what it can, the pass publishes the status and then fails,
naming every record it could not apply, so the area's report (status/<node>/reconcile) says so
until the record is mended. Only what concerns the whole node stops everything before a change:
a netbios name, workgroup or include that smb.conf cannot hold. A generated smb.conf is checked
with `testparm` before it replaces the running one, and smbd is told to reload only when the file
changed. The next pass (on every change of the records, and every 30 s) starts again from what
is there.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from cairn.cluster.store import Store
from cairn.config import SharesConfig
from cairn.errors import CairnError, CommandFailed, ExecutionError, ValidationError, last_line
from cairn.shares import accounts, acl, exports, smbconf
from cairn.shares.model import (Group, Share, User, check_group, check_share, check_user, nt_hash_problem,
                                share_key, volume_path)
from cairn.shares.service import GROUPS, SHARES, USERS
from cairn.storage.pools import list_pools
from cairn.system.files import read_text, write_if_changed

log = logging.getLogger(__name__)

SMB_CONF = "etc/samba/smb.conf"
EXPORTS = "etc/exports.d/cairn.exports"
NFS_CONF = "etc/nfs.conf.d/cairn.conf"


@dataclass(frozen=True)
class Records:
    users: dict[str, User]
    hashes: dict[str, str]
    groups: dict[str, Group]
    shares: list[Share]                       # shares on pools of this node
    pools_root: str
    rejected: dict[str, str] = field(default_factory=dict)   # record key -> why the node cannot use it
    held_users: frozenset[str] = frozenset()  # names in rejected user records: their accounts stay
    held_groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class NodeState:
    unix_users: list[accounts.UnixUser]
    unix_groups: list[accounts.UnixGroup]
    passdb: list[accounts.PassdbEntry]
    mounted_pools: frozenset[str]
    volumes: frozenset[str]                   # volume directories that exist (mounted pools only)
    smb_conf: str | None
    exports: str | None
    nfs_conf: str | None
    acls: dict[str, set[str] | None]          # share path -> its ACL entries (None: no directory)
    smbd_active: bool = True
    nfsd_active: bool = True


@dataclass(frozen=True)
class Action:
    kind: str                                 # mkdir, run, acl, smb.conf, exports, nfs.conf, start
    what: str
    argv: tuple[str, ...] = ()
    path: str = ""
    text: str = ""
    record: str = ""                          # "user:<name>", "group:<name>", "share:<name>"; "" for the node
    input: str = field(default="", repr=False)    # stdin (a secret), as an in-memory file
    expect: str = ""                          # the command's stdout must contain it


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    served: list[Share]                       # the shares this node serves once the actions are done
    rejected: dict[str, str]                  # record key -> why (the records' own, and what no file can hold)


# --- screening records (pure) ------------------------------------------------------------------
def shown(key: str) -> str:
    """A record key for a message: as is, or quoted when it holds characters that would hide."""
    return key if key.isprintable() else repr(key)


def _problems_text(error: ValidationError) -> str:
    return "; ".join(f"{name}: {problem}" for name, problem in sorted(error.fields.items()))


def _named(data: Any) -> str | None:
    return data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else None


def records_from(users: Iterable[tuple[str, Any]], groups: Iterable[tuple[str, Any]],
                 shares: Iterable[tuple[str, Any]], pools_root: str, pools: set[str]) -> Records:
    """The records this node can use, each checked as the API checks it, from (key, value) pairs
    as listed from the store ("share-users/alice", {...}). Shares on pools not in `pools` are not
    this node's and are not looked at. A record that fails its checks is left out and listed in
    `rejected` under its key, with what is wrong."""
    users, groups, shares = list(users), list(groups), list(shares)
    rejected: dict[str, str] = {}
    held_users: set[str] = set()
    held_groups: set[str] = set()
    good_groups: dict[str, Group] = {}
    group_names = {name for key, data in groups for name in (_named(data), key.rsplit("/", 1)[-1]) if name}
    for key, data in groups:
        name = key.rsplit("/", 1)[-1]
        try:
            if not isinstance(data, dict):
                raise ValidationError({"group": "must be an object"})
            problems = {"gid": "missing"} if data.get("gid") is None else {}
            try:
                group = check_group(data, ())
            except ValidationError as error:
                problems.update(error.fields)
            else:
                if group.name != name:
                    problems["name"] = f"{group.name!r} is stored under {shown(key)}"
            if problems:
                raise ValidationError(problems)
        except ValidationError as error:
            rejected[key] = _problems_text(error)
            held_groups.update(n for n in (name, _named(data)) if n)
            continue
        good_groups[group.name] = group
    good_users: dict[str, User] = {}
    hashes: dict[str, str] = {}
    user_names = {name for key, data in users for name in (_named(data), key.rsplit("/", 1)[-1]) if name}
    for key, data in users:
        name = key.rsplit("/", 1)[-1]
        try:
            if not isinstance(data, dict):
                raise ValidationError({"user": "must be an object"})
            fields = {k: v for k, v in data.items() if k != "nt_hash"}
            problems = {}
            if fields.get("uid") is None:
                problems["uid"] = "missing"
            hash_problem = nt_hash_problem(data.get("nt_hash"))
            if hash_problem:
                problems["nt_hash"] = hash_problem
            try:
                user = check_user(fields, (), groups=group_names, taken_uids=())
            except ValidationError as error:
                problems.update(error.fields)
            else:
                if user.name != name:
                    problems["name"] = f"{user.name!r} is stored under {shown(key)}"
            if problems:
                raise ValidationError(problems)
        except ValidationError as error:
            rejected[key] = _problems_text(error)
            held_users.update(n for n in (name, _named(data)) if n)
            continue
        good_users[user.name] = user
        hashes[user.name] = data["nt_hash"]
    good_shares: list[Share] = []
    for key, data in shares:
        if not isinstance(data, dict) or data.get("pool") not in pools:
            if not isinstance(data, dict):
                rejected[key] = "share: must be an object"
            continue
        try:
            share = check_share(data, user_names, group_names, pools_root=pools_root)
            if key.rsplit("/", 1)[-1] != share_key(share.name):
                raise ValidationError({"name": f"{share.name!r} is stored under {shown(key)}"})
        except ValidationError as error:
            rejected[key] = _problems_text(error)
            continue
        good_shares.append(share)
    return Records(good_users, hashes, good_groups, sorted(good_shares, key=lambda s: s.name), pools_root,
                   rejected, frozenset(held_users - set(good_users)), frozenset(held_groups - set(good_groups)))


def share_record_key(name: str) -> str:
    return f"{SHARES}{share_key(name)}"


def fit_for_files(shares: list[Share], records: Records, settings: SharesConfig) -> tuple[list[Share], dict[str, str]]:
    """The shares smb.conf and the exports can hold, and why the others cannot (by record key).
    Two shares on one exported path: the first by name keeps it."""
    fit: list[Share] = []
    rejected: dict[str, str] = {}
    exported: dict[str, str] = {}
    for share in shares:
        try:
            if share.smb is not None:
                smbconf.share_options(share, records.users, records.groups, pools_root=records.pools_root)
            if share.nfs is not None and settings.nfs:
                exports.export_line(share, exports.default_fsid(share.name))
                other = exported.setdefault(share.path, share.name)
                if other != share.name:
                    raise ValueError(f"share {other!r} exports {share.path} already")
        except ValueError as exc:
            rejected[share_record_key(share.name)] = str(exc)
            continue
        fit.append(share)
    return fit, rejected


def plan(records: Records, state: NodeState, settings: SharesConfig, node: str, now: float = 0.0) -> Plan:
    """Everything that must change, in the order it must happen (pure). Shares no config file can
    hold are left out and named in the plan's `rejected`; ValueError when a config file cannot be
    generated at all (a node setting it cannot hold), before anything is planned. `now` is when a
    password written to the passdb counts as set."""
    etc = settings.etc_root
    placed = [s for s in records.shares if s.pool in state.mounted_pools
              and volume_path(records.pools_root, s.pool, s.volume) in state.volumes]
    served, rejected = fit_for_files(placed, records, settings)
    smb_conf = smbconf.render(served, records.users, records.groups,
                              netbios_name=smbconf.netbios_name_for(node), workgroup=settings.workgroup,
                              pools_root=records.pools_root, include=settings.samba_include)
    exports_text = exports.render_exports(served) if settings.nfs else None
    nfs_conf = exports.render_nfs_conf() if settings.nfs else None
    conf_path = os.path.join(etc, SMB_CONF)

    actions: list[Action] = []
    # smb.conf first: it says where the passdb is, and pdbedit must never fall back to defaults.
    # A share that appears before its ACL is set is safe: a new directory is root's alone.
    if state.smb_conf != smb_conf:
        actions.append(Action("smb.conf", "write smb.conf", path=conf_path, text=smb_conf))
    for share in served:
        if state.acls.get(share.path) is None:
            actions.append(Action("mkdir", f"create {share.path} for share {share.name}", path=share.path,
                                  record=f"share:{share.name}"))
    removals, updates = accounts.plan_passdb(records.users, records.hashes, state.passdb, conf_path, now,
                                             keep=records.held_users)
    steps = removals + accounts.plan_accounts(records.users, records.groups, state.unix_users,
                                              state.unix_groups, etc, keep_users=records.held_users,
                                              keep_groups=records.held_groups) + updates
    actions += [Action("run", s.what, s.argv, record=s.record, input=s.input, expect=s.expect) for s in steps]
    for share in served:
        wanted = acl.entries(share, records.users, records.groups)
        if state.acls.get(share.path) != acl.as_directory(wanted):
            actions.append(Action("acl", f"set the ACL of share {share.name}", path=share.path,
                                  text=",".join(wanted), record=f"share:{share.name}"))
    if any(s.smb is not None for s in served) and not state.smbd_active:
        actions.append(Action("start", "start smbd", argv=("smbd.service",)))
    if settings.nfs:
        if state.nfs_conf != nfs_conf:
            actions.append(Action("nfs.conf", "write nfs.conf", path=os.path.join(etc, NFS_CONF),
                                  text=nfs_conf))
        if state.exports != exports_text:
            actions.append(Action("exports", "write the NFS exports", path=os.path.join(etc, EXPORTS),
                                  text=exports_text))
        if any(s.nfs is not None for s in served) and not state.nfsd_active:
            actions.append(Action("start", "start the NFS server", argv=("nfs-server.service",)))
    return Plan(actions, served, rejected)


def node_step(action: Action) -> str:
    """How a failed step that concerns the whole node is named: its kind ("smb.conf", "exports",
    "nfs.conf"), or "start:<unit>"."""
    return f"start:{action.argv[0]}" if action.kind == "start" else action.kind


def record_key(record: str) -> str:
    """The store key of a plan's record ("user:alice" → "share-users/alice")."""
    kind, _, name = record.partition(":")
    return {"user": USERS + name, "group": GROUPS + name, "share": share_record_key(name)}.get(kind, record)


def served_after(plan_: Plan, failed: dict[str, str], before: Iterable[str]) -> list[str]:
    """The names of the shares served once a pass has run (pure): those of the plan, less those
    whose own steps failed; when smb.conf (or the exports) could not be written, a share that
    needs it counts only if it was served before (the running config still has it)."""
    earlier = set(before)
    names = []
    for share in plan_.served:
        if f"share:{share.name}" in failed:
            continue
        stale = (share.smb is not None and "smb.conf" in failed) or \
            (share.nfs is not None and ("exports" in failed or "nfs.conf" in failed))
        if stale and share.name not in earlier:
            continue
        names.append(share.name)
    return sorted(names)


class ShareApplier:
    name = "shares"

    def __init__(self, runner, store: Store, node: str, settings: SharesConfig, pools_root: str,
                 mounted: Callable[[str], bool], clock: Callable[[], float] = time.time) -> None:
        self.runner = runner
        self.store = store
        self.node = node
        self.settings = settings
        self.pools_root = pools_root
        self.mounted = mounted
        self.clock = clock
        self._paths: list[str] = []
        self._volumes: list[tuple[str, str]] = []
        self._records: Records | None = None
        self._plan: Plan | None = None
        self._failed: dict[str, str] = {}          # record (or node_step) -> what failed
        self._published: list[str] | None = None   # the shares last published as served

    def _etc(self, relative: str) -> str:
        return os.path.join(self.settings.etc_root, relative)

    @property
    def systemd(self) -> bool:
        return self.settings.service_manager == "systemd"

    # --- Reconciler ----------------------------------------------------------------------------
    def desired(self, store: Store) -> Records:
        mine = {p.name for p in list_pools(store) if p.node == self.node}
        records = records_from([(e.key, e.value) for e in store.list(USERS)],
                               [(e.key, e.value) for e in store.list(GROUPS)],
                               [(e.key, e.value) for e in store.list(SHARES)], self.pools_root, mine)
        for key, problem in sorted(records.rejected.items()):
            log.warning("shares: record %s cannot be applied: %s", shown(key), problem)
        self._records = records
        self._plan = None
        self._failed = {}
        self._volumes = sorted({(s.pool, s.volume) for s in records.shares})
        self._paths = [s.path for s in records.shares]
        return records

    def actual(self) -> NodeState:
        conf = self._etc(SMB_CONF)
        passdb = []
        if Path(conf).exists():
            listed = self.runner.run(["pdbedit", "-s", conf, "-L", "-w"], check=False)
            passdb = accounts.parse_pdbedit(listed.stdout) if listed.ok else []
        mounted = frozenset(pool for pool, _ in self._volumes if self.mounted(pool))
        acls: dict[str, set[str] | None] = {}
        for path in self._paths:
            if os.path.isdir(path):
                acls[path] = acl.parse_getfacl(self.runner.run(["getfacl", "-c", "-p", "-n", path]).stdout)
            else:
                acls[path] = None
        return NodeState(
            unix_users=accounts.parse_passwd(read_text(self._etc("etc/passwd")) or ""),
            unix_groups=accounts.parse_group(read_text(self._etc("etc/group")) or ""),
            passdb=passdb,
            mounted_pools=mounted,
            volumes=frozenset(path for pool, volume in self._volumes if pool in mounted
                              for path in [volume_path(self.pools_root, pool, volume)] if os.path.isdir(path)),
            smb_conf=read_text(conf),
            exports=read_text(self._etc(EXPORTS)) if self.settings.nfs else None,
            nfs_conf=read_text(self._etc(NFS_CONF)) if self.settings.nfs else None,
            acls=acls,
            smbd_active=self._active("smbd.service"),
            nfsd_active=self._active("nfs-server.service") if self.settings.nfs else True,
        )

    def diff(self, desired: Records, actual: NodeState) -> list[Action]:
        try:
            self._plan = plan(desired, actual, self.settings, self.node, self.clock())
        except ValueError as exc:
            raise ExecutionError(f"share configuration not generated, nothing changed: {exc}") from None
        for key, problem in sorted(self._plan.rejected.items()):
            log.warning("shares: share record %s cannot be applied: %s", shown(key), problem)
        return self._plan.actions

    def apply(self, actions: list[Action]) -> None:
        """Carry out the actions in order. A failed step is noted (and the later steps of its
        record skipped); the others still run. after_pass reports what failed."""
        conf = self._etc(SMB_CONF)
        for action in actions:
            if action.record and action.record in self._failed:
                log.info("shares: skipped %s (an earlier step of %s failed)", action.what, action.record)
                continue
            if action.argv[:1] == ("pdbedit",) and not os.path.exists(conf):
                # Without its smb.conf pdbedit would fall back to a default passdb.
                self._failed[action.record] = f"{action.what}: not done, smb.conf is not written yet"
                continue
            try:
                self._apply(action)
            except (CairnError, OSError) as exc:
                reason = exc.message if isinstance(exc, CairnError) else str(exc)
                self._failed[action.record or node_step(action)] = f"{action.what}: {reason}"
                log.warning("shares: %s failed: %s", action.what,
                            exc.log_text() if isinstance(exc, CairnError) else reason)
                continue
            log.info("shares: %s", action.what)

    def after_pass(self) -> None:
        """Publish which shares this node serves and which records it could not apply
        (status/<node>/shares, written only when it changed); then fail, naming them, if any."""
        if self._records is None or self._plan is None:
            return
        problems = {**self._records.rejected, **self._plan.rejected}
        problems.update({record_key(record): why for record, why in self._failed.items()})
        key = f"status/{self.node}/shares"
        if self._published is None:            # once per process: what an earlier agent published
            self._published = list((self.store.get(key) or {}).get("served") or [])
        served = served_after(self._plan, self._failed, self._published)
        status: dict[str, Any] = {"served": served}
        if problems:
            status["problems"] = dict(sorted(problems.items()))
        self.store.put_if_changed(key, status)
        self._published = served
        if problems:
            listed = "; ".join(f"{shown(key)}: {why}" for key, why in sorted(problems.items()))
            raise ExecutionError(f"{len(problems)} not applied (everything else was): {listed}")

    # --- effects -------------------------------------------------------------------------------
    def _active(self, unit: str) -> bool:
        if not self.systemd:
            return True                        # someone else runs the daemons
        return self.runner.run(["systemctl", "is-active", "--quiet", unit], check=False).ok

    def _apply(self, action: Action) -> None:
        if action.kind == "mkdir":
            os.makedirs(action.path, mode=0o770, exist_ok=True)
        elif action.kind == "run":
            result = self.runner.run(list(action.argv), input=action.input or None,
                                     input_file=bool(action.input))
            if action.expect and action.expect not in result.stdout:
                raise CommandFailed(list(action.argv), result.returncode, result.stderr or result.stdout,
                                    message=f"{action.argv[0]} did not confirm it: "
                                            f"{last_line(result.stderr or result.stdout) or 'no output'}")
        elif action.kind == "acl":
            os.chown(action.path, 0, 0)
            self.runner.run(["setfacl", "-R", "--set", action.text, action.path], timeout=3600)
        elif action.kind == "smb.conf":
            self._write_smb_conf(action.path, action.text)
        elif action.kind == "nfs.conf":
            write_if_changed(action.path, action.text)
            if self.systemd and self._active("nfs-server.service"):
                self.runner.run(["systemctl", "restart", "nfs-server.service"], timeout=120)
        elif action.kind == "exports":
            write_if_changed(action.path, action.text)
            if self._active("nfs-server.service"):
                self.runner.run(["exportfs", "-ra"], timeout=120)
        elif action.kind == "start":
            self.runner.run(["systemctl", "start", *action.argv], timeout=120)
        else:
            raise ValueError(f"unknown share action {action.kind!r}")

    def _write_smb_conf(self, path: str, text: str) -> None:
        """testparm checks the new file before it replaces the running one; then smbd reloads."""
        candidate = Path(path + ".cairn-new")
        candidate.parent.mkdir(parents=True, exist_ok=True)
        candidate.write_text(text)
        try:
            checked = self.runner.run(["testparm", "-s", "--suppress-prompt", str(candidate)], check=False)
            complaints = [line for line in checked.stderr.splitlines()
                          if "unknown parameter" in line.lower() or line.startswith("ERROR")]
            if not checked.ok or complaints:
                raise ExecutionError("testparm refused the generated smb.conf; the running one stays: "
                                     + "; ".join(complaints or checked.stderr.strip().splitlines()[-2:]))
            os.replace(candidate, path)
        finally:
            candidate.unlink(missing_ok=True)
        if self.systemd:
            if self._active("smbd.service"):
                self.runner.run(["smbcontrol", "smbd", "reload-config"], check=False)
        else:
            self.runner.run(["smbcontrol", "-s", path, "smbd", "reload-config"], check=False)
