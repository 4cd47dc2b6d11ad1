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

One bad record never stops the others. Each record is checked as the API checks an imported one
(`screen`, with iscsi.check_target); a record the node cannot use is left out, its
iscsi-status/<name> says what is wrong with it, and whatever LIO has for its IQN and LUN serials
is left as it is (never removed for it). A step that fails skips the later steps of its target
(and of the LUNs that use its backstore); the other targets are still applied. Having applied
what it can, the pass publishes every status and then fails, naming what it could not apply.
Statuses are written only when they changed (Store.put_if_changed): they hold no timestamp.

`plan` is pure; `LioApplier.actual/apply` are the only parts that touch configfs (rtslib is
imported there, so this module imports on hosts without it).
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

from cairn.cluster.store import Store
from cairn.errors import CairnError, ExecutionError, ValidationError
from cairn.shares import iscsi
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


def shown(key: str) -> str:
    return key if key.isprintable() else repr(key)


def screen(entries: Iterable[tuple[str, Any]], pools: set[str], pools_root: str | None = None
           ) -> tuple[list[dict], dict[str, str], frozenset[str]]:
    """The target records of this node's `pools` that the node can use, from (key, value) pairs
    as listed from the store; the others by key with what is wrong; and what LIO must keep for
    them (their IQNs and backstore names, where they can be read). A LUN file must be where the
    API puts it: <pools_root>/<pool>/<volume>/.iscsi/<target>/lun<n>-<serial[:8]>.img (without
    `pools_root`, any absolute normalised root will do, the same for every LUN of the target)."""
    good: list[dict] = []
    rejected: dict[str, str] = {}
    keep: set[str] = set()
    for key, record in entries:
        if not isinstance(record, dict):
            rejected[key] = "target: must be an object"
            continue
        if record.get("pool") not in pools:
            continue
        try:
            target = iscsi.check_target(record, pools_root or _root_of(record), whole_record=True)
            if key.rsplit("/", 1)[-1] != target.name:
                raise ValidationError({"name": f"{target.name!r} is stored under {shown(key)}"})
        except ValidationError as error:
            rejected[key] = "; ".join(f"{name}: {why}" for name, why in sorted(error.fields.items()))
            if isinstance(record.get("iqn"), str):
                keep.add(record["iqn"])
            luns = record.get("luns")
            for lun in luns if isinstance(luns, list) else []:
                if isinstance(lun, dict) and isinstance(lun.get("serial"), str):
                    keep.add(backstore_name(lun["serial"]))
            continue
        good.append(record)
    return good, rejected, frozenset(keep)


def _root_of(record: dict) -> str:
    """The pools' root a record's first well-placed LUN file implies ("/" when none does)."""
    luns = record.get("luns")
    for lun in luns if isinstance(luns, list) else []:
        try:
            suffix = iscsi.lun_file("/", record["pool"], record["volume"], record["name"], int(lun["lun"]),
                                    lun["serial"])
        except (KeyError, TypeError, ValueError):
            continue
        path = lun.get("file")
        if isinstance(path, str) and path.endswith(suffix):
            root = path[:-len(suffix)]
            if root.startswith("/") and posixpath.normpath(root) == root:
                return root
    return "/"


def plan(want: Lio, have: Lio, keep: frozenset[str] = frozenset()) -> list[Action]:
    """What makes LIO (and the LUN files) match `want`, in a safe order (pure). Targets (by IQN)
    and backstores named in `keep` are never removed: they belong to records this pass could not use."""
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
    for iqn in sorted(set(have.targets) - set(want.targets) - keep):
        actions.append(Action("target-delete", f"remove target {iqn}", target=iqn))
    for name, store in sorted(have.backstores.items()):
        if name.startswith(BACKSTORE_PREFIX) and name not in want.backstores and name not in keep:
            actions.append(Action("backstore-delete", f"remove backstore {name}", backstore=store))
    return actions


class LioApplier:
    name = "iscsi"

    def __init__(self, store: Store, node: str, mounted, rtslib=None, pools_root: str | None = None) -> None:
        self.store = store
        self.node = node
        self.mounted = mounted
        self.pools_root = pools_root             # None: LUN files are checked without it (see screen)
        self._rtslib = rtslib
        self._records: list[dict] = []
        self._rejected: dict[str, str] = {}
        self._keep: frozenset[str] = frozenset()
        self._failed: dict[str, str] = {}        # target IQN or backstore name -> what failed

    @property
    def rtslib(self):
        if self._rtslib is None:
            import rtslib_fb                       # Debian's python3-rtslib-fb, in the appliance
            self._rtslib = rtslib_fb
        return self._rtslib

    # --- Reconciler ----------------------------------------------------------------------------
    def desired(self, store: Store) -> Lio:
        mine = {p.name for p in list_pools(store) if p.node == self.node}
        self._records, self._rejected, self._keep = screen(
            [(e.key, e.value) for e in store.list(TARGETS)], mine, self.pools_root)
        self._failed = {}
        for key, problem in sorted(self._rejected.items()):
            log.warning("iscsi: record %s cannot be applied: %s", shown(key), problem)
        return wanted(self._records, {pool for pool in mine if self.mounted(pool)})

    def actual(self) -> Lio:
        if not self._records and not self._keep and not os.path.isdir("/sys/kernel/config/target/iscsi"):
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
        return plan(desired, actual, self._keep)

    def apply(self, actions: list[Action]) -> None:
        """Carry out the actions in order; a failed one skips the later actions of its target (and
        of its backstore), the others still run. after_pass reports what failed."""
        for action in actions:
            involved = [name for name in (action.target, action.backstore.name if action.backstore else "")
                        if name]
            if any(name in self._failed for name in involved):
                log.info("iscsi: skipped %s (an earlier step of it failed)", action.what)
                continue
            try:
                self._apply(action)
            except (CairnError, OSError, self.rtslib.RTSLibError) as exc:
                reason = exc.message if isinstance(exc, CairnError) else str(exc)
                for name in involved:
                    self._failed[name] = f"{action.what}: {reason}"
                log.warning("iscsi: %s failed: %s", action.what, reason)
                continue
            log.info("iscsi: %s", action.what)

    def after_pass(self) -> None:
        """Delete the files of deleted LUNs, publish each target's sessions and LUN sizes (or what
        is wrong with it), then fail naming the targets that could not be applied, if any."""
        mine = {p.name for p in list_pools(self.store) if p.node == self.node and self.mounted(p.name)}
        in_use = {lun["file"] for record in self._records for lun in record.get("luns") or []}
        for entry in self.store.list(TRASH):
            tomb = entry.value
            if tomb.get("pool") in mine and tomb.get("file") not in in_use:
                if os.path.exists(tomb["file"]):
                    os.unlink(tomb["file"])
                self.store.delete(entry.key)
        problems = dict(self._rejected)
        for key, why in self._rejected.items():
            self.store.put_if_changed(STATUS + key.rsplit("/", 1)[-1], {"node": self.node, "error": why})
        sessions: dict[str, list[str]] = {}
        if self._records:
            for target in self.rtslib.RTSRoot().targets:
                for tpg in target.tpgs:
                    for acl in tpg.node_acls:
                        if acl.session and acl.session.get("state") == "LOGGED_IN":
                            sessions.setdefault(target.wwn, []).append(acl.node_wwn)
        for record in self._records:
            if record["pool"] not in mine:
                continue
            luns = {}
            failed = [self._failed[name] for name in
                      [record["iqn"]] + [backstore_name(lun["serial"]) for lun in record.get("luns") or []]
                      if name in self._failed]
            for lun in record.get("luns") or []:
                allocated = os.stat(lun["file"]).st_blocks * 512 if os.path.exists(lun["file"]) else 0
                luns[str(lun["lun"])] = {"size": lun["size"], "allocated": allocated}
            status = {"node": self.node, "port": PORT, "sessions": sorted(sessions.get(record["iqn"], [])),
                      "luns": luns}
            if failed:
                status["error"] = "; ".join(failed)
                problems[TARGETS + record["name"]] = status["error"]
            self.store.put_if_changed(STATUS + record["name"], status)
        if problems:
            listed = "; ".join(f"{shown(key)}: {why}" for key, why in sorted(problems.items()))
            raise ExecutionError(f"{len(problems)} not applied (everything else was): {listed}")

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
