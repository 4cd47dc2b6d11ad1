"""The node side of shares: make this node's accounts, Samba passdb, share directories' ACLs,
smb.conf and NFS exports match the records (a Reconciler for agent/reconcile.py).

Who writes what: the API writes share-users/, share-groups/ and shares/ (service.py); only this
node's agent runs this module, and it only serves shares whose pool belongs to this node and is
mounted here. It writes, under the configured etc root, etc/passwd and etc/group (through
useradd & co.), Samba's passdb (pdbedit), etc/samba/smb.conf, etc/exports.d/cairn.exports and
etc/nfs.conf.d/cairn.conf, the share directories' ACLs, and status/<node>/shares (the shares it
serves, after each good pass).

A pass: `desired` reads the records, `actual` reads the node, `diff` (pure) renders the files and
plans the commands, `apply` carries them out in a fixed order: smb.conf, share directories,
passdb removals, Unix accounts, passdb additions, ACLs, then the NFS config and exports. If a config file cannot
be generated (a record that got into the store without the API's checks), the pass stops before
changing anything; a generated smb.conf is checked with `testparm` before it replaces the running
one, and smbd is told to reload only when the file changed. On a failed step the pass stops; the
next pass (the agent runs one on every change of the records, and every 30 s) starts again from
what is there.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cairn.cluster.store import Store
from cairn.config import SharesConfig
from cairn.errors import CommandFailed, ExecutionError
from cairn.shares import accounts, acl, exports, smbconf
from cairn.shares.model import Group, Share, User, volume_path
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
    secret_input: bool = False


def plan(records: Records, state: NodeState, settings: SharesConfig, node: str) -> list[Action]:
    """Everything that must change, in the order it must happen (pure; ValueError when a config
    file cannot be generated, before anything is planned)."""
    etc = settings.etc_root
    served = [s for s in records.shares if s.pool in state.mounted_pools
              and volume_path(records.pools_root, s.pool, s.volume) in state.volumes]
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
            actions.append(Action("mkdir", f"create {share.path} for share {share.name}", path=share.path))
    removals, updates = accounts.plan_passdb(records.users, records.hashes, state.passdb, conf_path)
    steps = removals + accounts.plan_accounts(records.users, records.groups, state.unix_users,
                                              state.unix_groups, etc) + updates
    actions += [Action("run", s.what, s.argv, secret_input=s.secret_input) for s in steps]
    for share in served:
        wanted = acl.entries(share, records.users, records.groups)
        if state.acls.get(share.path) != acl.as_directory(wanted):
            actions.append(Action("acl", f"set the ACL of share {share.name}", path=share.path,
                                  text=",".join(wanted)))
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
    return actions


class ShareApplier:
    name = "shares"

    def __init__(self, runner, store: Store, node: str, settings: SharesConfig, pools_root: str,
                 mounted: Callable[[str], bool]) -> None:
        self.runner = runner
        self.store = store
        self.node = node
        self.settings = settings
        self.pools_root = pools_root
        self.mounted = mounted
        self._paths: list[str] = []
        self._volumes: list[tuple[str, str]] = []
        self._shares: list[tuple[str, str, str]] = []
        self._last_state: NodeState | None = None

    def _etc(self, relative: str) -> str:
        return os.path.join(self.settings.etc_root, relative)

    @property
    def systemd(self) -> bool:
        return self.settings.service_manager == "systemd"

    # --- Reconciler ----------------------------------------------------------------------------
    def desired(self, store: Store) -> Records:
        mine = {p.name for p in list_pools(store) if p.node == self.node}
        users, hashes = {}, {}
        for entry in store.list(USERS):
            data = dict(entry.value)
            hashes[data["name"]] = data.pop("nt_hash")
            users[data["name"]] = User.from_dict(data)
        groups = {e.value["name"]: Group.from_dict(e.value) for e in store.list(GROUPS)}
        shares = sorted((Share.from_dict(e.value) for e in store.list(SHARES)), key=lambda s: s.name)
        shares = [s for s in shares if s.pool in mine]
        self._volumes = sorted({(s.pool, s.volume) for s in shares})
        self._shares = [(s.name, s.pool, s.volume) for s in shares]
        self._paths = [s.path for s in shares]
        return Records(users, hashes, groups, shares, self.pools_root)

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
        self._last_state = NodeState(
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
        return self._last_state

    def diff(self, desired: Records, actual: NodeState) -> list[Action]:
        try:
            return plan(desired, actual, self.settings, self.node)
        except ValueError as exc:
            raise ExecutionError(f"share configuration not generated, nothing changed: {exc}") from None

    def apply(self, actions: list[Action]) -> None:
        done: list[str] = []
        for action in actions:
            try:
                self._apply(action)
            except CommandFailed as exc:
                raise ExecutionError(f"{action.what}: {exc.message}", done) from None
            done.append(action.what)
            log.info("shares: %s", action.what)

    def after_pass(self) -> None:
        """Publish which shares this node serves (status/<node>/shares; the console shows it)."""
        state = self._last_state
        if state is None:
            return
        served = sorted(name for name, pool, volume in self._shares if pool in state.mounted_pools
                        and volume_path(self.pools_root, pool, volume) in state.volumes)
        status = {"served": served}
        key = f"status/{self.node}/shares"
        if self.store.get(key) != status:
            self.store.put(key, status)

    # --- effects -------------------------------------------------------------------------------
    def _active(self, unit: str) -> bool:
        if not self.systemd:
            return True                        # someone else runs the daemons
        return self.runner.run(["systemctl", "is-active", "--quiet", unit], check=False).ok

    def _apply(self, action: Action) -> None:
        if action.kind == "mkdir":
            os.makedirs(action.path, mode=0o770, exist_ok=True)
        elif action.kind == "run":
            secret = secrets.token_urlsafe(24) if action.secret_input else None
            self.runner.run(list(action.argv), input=f"{secret}\n{secret}\n" if secret else None)
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
