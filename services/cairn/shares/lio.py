"""The node side of iSCSI: LIO (the kernel's SCSI target) configured through rtslib-fb from the
target records, never by scraping targetcli (a Reconciler for agent/reconcile.py).

Who writes what: the API writes iscsi-targets/ and iscsi-trash/ (iscsi_service.py); only the
agent of the node that owns a target's pool applies it, writes iscsi-status/<target>, deletes the
LUN files named in iscsi-trash/ and then the tombstones. On a Cairn node LIO belongs to Cairn:
iSCSI targets that no record names, and fileio backstores named `cairn-*` that no LUN uses, are
removed.

Mapping (one target per record):
- LUN file: a sparse file at the record's path, created with the LUN's size (thin: blocks are
  allocated as the initiator writes); a grown LUN grows the file and LIO's `fd_dev_size`, and the
  initiator sees the new size after a rescan. Backstore `cairn-<serial[:16]>` (fileio, write-through:
  an acknowledged write is on the pool's disks), unit serial = the LUN's serial, so initiators see
  the same disk identity after a reboot or a failover.
- Target `<iqn>`, TPG 1, portal 0.0.0.0:3260, no demo mode: only the listed initiator IQNs get an
  ACL, each with every LUN mapped at its own number; with CHAP, every ACL has the target's CHAP user
  and secret and the TPG demands authentication.
LIO's configuration lives in configfs and is gone after a reboot: the agent builds it again from the
records on its first pass (after the pools are mounted), which is the "restore at boot"; Debian's
rtslib-fb-targetctl stays disabled so two restorers never race.

`plan` is pure; `LioApplier.actual/apply` are the only parts that touch configfs (rtslib is
imported there, so this module imports on hosts without it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from cairn.cluster.store import Store
from cairn.errors import ExecutionError
from cairn.storage.pools import list_pools

log = logging.getLogger(__name__)

TARGETS = "iscsi-targets/"
STATUS = "iscsi-status/"
TRASH = "iscsi-trash/"
BACKSTORE_PREFIX = "cairn-"
PORT = 3260


def backstore_name(serial: str) -> str:
    return BACKSTORE_PREFIX + serial[:16]


@dataclass(frozen=True)
class Backstore:
    name: str
    file: str
    size: int
    serial: str


@dataclass(frozen=True)
class Acl:
    chap: tuple[str, str] | None
    mapped: frozenset[int]


@dataclass(frozen=True)
class TargetState:
    iqn: str
    authentication: bool
    luns: dict[int, str]                 # LUN number -> backstore name
    acls: dict[str, Acl]                 # initiator IQN -> its ACL


@dataclass(frozen=True)
class Lio:
    """LIO's configuration (wanted or found), plus the size of each LUN file."""
    backstores: dict[str, Backstore] = field(default_factory=dict)
    targets: dict[str, TargetState] = field(default_factory=dict)
    file_sizes: dict[str, int] = field(default_factory=dict)     # found only: -1 = missing


@dataclass(frozen=True)
class Action:
    kind: str
    what: str
    target: str = ""
    backstore: Backstore | None = None
    lun: int = -1
    initiator: str = ""
    acl: Acl | None = None
    flag: bool = False


def wanted(records: list[dict], mounted_pools: set[str]) -> Lio:
    """The LIO configuration for the targets whose pool is mounted on this node."""
    backstores: dict[str, Backstore] = {}
    targets: dict[str, TargetState] = {}
    for record in sorted(records, key=lambda r: r["name"]):
        if record["pool"] not in mounted_pools:
            continue
        luns = {}
        for lun in record.get("luns") or []:
            store = Backstore(backstore_name(lun["serial"]), lun["file"], int(lun["size"]), lun["serial"])
            backstores[store.name] = store
            luns[int(lun["lun"])] = store.name
        chap = record.get("chap")
        credentials = (chap["user"], chap["password"]) if chap else None
        acls = {initiator: Acl(credentials, frozenset(luns)) for initiator in record.get("initiators") or []}
        targets[record["iqn"]] = TargetState(record["iqn"], credentials is not None, luns, acls)
    return Lio(backstores, targets)


def plan(want: Lio, have: Lio) -> list[Action]:
    """What makes LIO (and the LUN files) match `want`, in a safe order (pure)."""
    actions: list[Action] = []
    for name, store in sorted(want.backstores.items()):
        size = have.file_sizes.get(store.file, -1)
        if size < store.size:
            actions.append(Action("file", f"{'create' if size < 0 else 'grow'} LUN file {store.file}",
                                  backstore=store))
        found = have.backstores.get(name)
        if found is None:
            actions.append(Action("backstore-create", f"create backstore {name}", backstore=store))
        elif found.file != store.file:
            actions.append(Action("backstore-delete", f"replace backstore {name}", backstore=found))
            actions.append(Action("backstore-create", f"create backstore {name}", backstore=store))
        elif found.size < store.size:
            actions.append(Action("backstore-grow", f"grow backstore {name} to {store.size} bytes",
                                  backstore=store))
    for iqn, target in sorted(want.targets.items()):
        current = have.targets.get(iqn)
        if current is None:
            actions.append(Action("target-create", f"create target {iqn}", target=iqn))
            current = TargetState(iqn, False, {}, {})
        for lun, name in sorted(current.luns.items()):
            if target.luns.get(lun) != name:
                actions.append(Action("lun-delete", f"remove LUN {lun} of {iqn}", target=iqn, lun=lun))
        for lun, name in sorted(target.luns.items()):
            if current.luns.get(lun) != name:
                actions.append(Action("lun-create", f"add LUN {lun} to {iqn}", target=iqn, lun=lun,
                                      backstore=want.backstores[name]))
        for initiator in sorted(set(current.acls) - set(target.acls)):
            actions.append(Action("acl-delete", f"remove {initiator} from {iqn}", target=iqn,
                                  initiator=initiator))
        for initiator, acl in sorted(target.acls.items()):
            if current.acls.get(initiator) != acl:
                actions.append(Action("acl-set", f"allow {initiator} on {iqn}", target=iqn,
                                      initiator=initiator, acl=acl))
        if current.authentication != target.authentication:
            actions.append(Action("authentication", f"{'require' if target.authentication else 'drop'} "
                                  f"CHAP on {iqn}", target=iqn, flag=target.authentication))
    for iqn in sorted(set(have.targets) - set(want.targets)):
        actions.append(Action("target-delete", f"remove target {iqn}", target=iqn))
    for name, store in sorted(have.backstores.items()):
        if name.startswith(BACKSTORE_PREFIX) and name not in want.backstores:
            actions.append(Action("backstore-delete", f"remove backstore {name}", backstore=store))
    return actions


class LioApplier:
    name = "iscsi"

    def __init__(self, store: Store, node: str, mounted, rtslib=None) -> None:
        self.store = store
        self.node = node
        self.mounted = mounted
        self._rtslib = rtslib
        self._records: list[dict] = []

    @property
    def rtslib(self):
        if self._rtslib is None:
            import rtslib_fb                       # Debian's python3-rtslib-fb, in the appliance
            self._rtslib = rtslib_fb
        return self._rtslib

    # --- Reconciler ----------------------------------------------------------------------------
    def desired(self, store: Store) -> Lio:
        mine = {p.name for p in list_pools(store) if p.node == self.node}
        self._records = [e.value for e in store.list(TARGETS) if e.value.get("pool") in mine]
        return wanted(self._records, {pool for pool in mine if self.mounted(pool)})

    def actual(self) -> Lio:
        if not self._records and not os.path.isdir("/sys/kernel/config/target/iscsi"):
            return Lio()                           # nothing wanted and LIO not even loaded
        rts = self.rtslib
        root = rts.RTSRoot()
        backstores = {}
        for so in root.storage_objects:
            if so.plugin == "fileio":
                backstores[so.name] = Backstore(so.name, so.udev_path, int(so.size), so.wwn)
        targets = {}
        for target in root.targets:
            if target.fabric_module.name != "iscsi":
                continue
            luns, acls, authentication = {}, {}, False
            for tpg in target.tpgs:
                authentication = tpg.get_attribute("authentication") == "1"
                for lun in tpg.luns:
                    luns[lun.lun] = lun.storage_object.name
                for acl in tpg.node_acls:
                    chap = (acl.chap_userid, acl.chap_password) if acl.chap_userid else None
                    acls[acl.node_wwn] = Acl(chap, frozenset(m.mapped_lun for m in acl.mapped_luns))
            targets[target.wwn] = TargetState(target.wwn, authentication, luns, acls)
        sizes = {}
        for record in self._records:
            for lun in record.get("luns") or []:
                sizes[lun["file"]] = os.stat(lun["file"]).st_size if os.path.exists(lun["file"]) else -1
        return Lio(backstores, targets, sizes)

    def diff(self, desired: Lio, actual: Lio) -> list[Action]:
        return plan(desired, actual)

    def apply(self, actions: list[Action]) -> None:
        done: list[str] = []
        for action in actions:
            try:
                self._apply(action)
            except (OSError, self.rtslib.RTSLibError) as exc:
                raise ExecutionError(f"{action.what}: {exc}", done) from None
            done.append(action.what)
            log.info("iscsi: %s", action.what)

    def after_pass(self) -> None:
        """Delete the files of deleted LUNs, and publish each target's sessions and LUN sizes."""
        mine = {p.name for p in list_pools(self.store) if p.node == self.node and self.mounted(p.name)}
        in_use = {lun["file"] for record in self._records for lun in record.get("luns") or []}
        for entry in self.store.list(TRASH):
            tomb = entry.value
            if tomb.get("pool") in mine and tomb.get("file") not in in_use:
                if os.path.exists(tomb["file"]):
                    os.unlink(tomb["file"])
                self.store.delete(entry.key)
        if not self._records:
            return
        root = self.rtslib.RTSRoot()
        sessions: dict[str, list[str]] = {}
        for target in root.targets:
            for tpg in target.tpgs:
                for acl in tpg.node_acls:
                    if acl.session and acl.session.get("state") == "LOGGED_IN":
                        sessions.setdefault(target.wwn, []).append(acl.node_wwn)
        for record in self._records:
            if record["pool"] not in mine:
                continue
            luns = {}
            for lun in record.get("luns") or []:
                allocated = os.stat(lun["file"]).st_blocks * 512 if os.path.exists(lun["file"]) else 0
                luns[str(lun["lun"])] = {"size": lun["size"], "allocated": allocated}
            status = {"node": self.node, "port": PORT, "sessions": sorted(sessions.get(record["iqn"], [])),
                      "luns": luns}
            if self.store.get(STATUS + record["name"]) != status:
                self.store.put(STATUS + record["name"], status)

    # --- effects -------------------------------------------------------------------------------
    def _target(self, iqn: str):
        rts = self.rtslib
        target = rts.Target(rts.FabricModule("iscsi"), iqn, mode="lookup")
        return target, rts.TPG(target, 1, mode="lookup")

    def _apply(self, action: Action) -> None:
        rts = self.rtslib
        kind = action.kind
        if kind == "file":
            store = action.backstore
            os.makedirs(os.path.dirname(store.file), mode=0o700, exist_ok=True)
            with open(store.file, "ab") as handle:          # never truncates: grows or creates
                if os.fstat(handle.fileno()).st_size < store.size:
                    os.ftruncate(handle.fileno(), store.size)
        elif kind == "backstore-create":
            store = action.backstore
            so = rts.FileIOStorageObject(store.name, dev=store.file, size=store.size, wwn=store.serial,
                                         write_back=False)
            so.set_attribute("emulate_tpu", "1")     # UNMAP punches holes: the LUN stays thin
        elif kind == "backstore-grow":
            so = rts.FileIOStorageObject(action.backstore.name)
            so._control(f"fd_dev_size={action.backstore.size}")   # rtslib has no public resize
        elif kind == "backstore-delete":
            rts.FileIOStorageObject(action.backstore.name).delete()
        elif kind == "target-create":
            target = rts.Target(rts.FabricModule("iscsi"), action.target, mode="create")
            tpg = rts.TPG(target, 1, mode="create")
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            tpg.set_attribute("authentication", "0")
            rts.NetworkPortal(tpg, "0.0.0.0", PORT, mode="create")
            tpg.enable = True
        elif kind == "target-delete":
            rts.Target(rts.FabricModule("iscsi"), action.target, mode="lookup").delete()
        elif kind == "lun-create":
            _, tpg = self._target(action.target)
            rts.LUN(tpg, action.lun, rts.FileIOStorageObject(action.backstore.name))
        elif kind == "lun-delete":
            _, tpg = self._target(action.target)
            rts.LUN(tpg, action.lun).delete()
        elif kind == "acl-delete":
            _, tpg = self._target(action.target)
            rts.NodeACL(tpg, action.initiator, mode="lookup").delete()
        elif kind == "acl-set":
            _, tpg = self._target(action.target)
            acl = rts.NodeACL(tpg, action.initiator)
            user, secret = action.acl.chap or ("", "")
            acl.chap_userid = user
            acl.chap_password = secret
            luns = {lun.lun: lun for lun in tpg.luns}
            for mapped in list(acl.mapped_luns):
                if mapped.mapped_lun not in action.acl.mapped:
                    mapped.delete()
            present = {m.mapped_lun for m in acl.mapped_luns}
            for number in sorted(action.acl.mapped - present):
                rts.MappedLUN(acl, number, luns[number])
        elif kind == "authentication":
            _, tpg = self._target(action.target)
            tpg.set_attribute("authentication", "1" if action.flag else "0")
        else:
            raise ValueError(f"unknown iSCSI action {kind!r}")
