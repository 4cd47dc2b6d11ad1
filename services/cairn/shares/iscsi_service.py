"""iSCSI targets as desired state: what the API and the console ask for, checked (iscsi.py does the
validation) and written to the store. The agent of the node that owns a target's pool applies it to
LIO and makes, grows and deletes the LUN files; this module never runs a command or touches a file.

Writes are compare-and-swap transactions (store layout: iscsi.py):

- creating a target puts its record and claims its IQN (iscsi-iqns/<iqn>) in one transaction that
  requires both keys absent, so two requests never both take a name or an IQN (409);
- every change of a target (settings, LUNs added, grown or deleted) requires the record unchanged
  since it was read (409 "changed meanwhile; try again" otherwise);
- removing LUNs (one, or all with their target) writes a tombstone iscsi-trash/<serial> for each in
  the same transaction, so the node learns of every file to delete in the revision where its LUN
  disappears, and no file is left behind when a request fails half-way (there is no half-way).

The CHAP password is kept in the record (LIO needs it in clear) but never returned: reads go through
iscsi.public_view. Only the shares export (service.py) carries it, like the users' NT hashes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, replace
from typing import Any, Callable

from cairn.cluster.store import Delete, Put, Store, absent, unchanged
from cairn.errors import Conflict, NotFound, ValidationError
from cairn.shares import iscsi
from cairn.storage.model import raise_problems
from cairn.storage.pools import POOL_STATUS, VOLUMES, get_pool

TARGETS = "iscsi-targets/"
IQNS = "iscsi-iqns/"
TRASH = "iscsi-trash/"
STATUS = "iscsi-status/"


def plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the store keeps it (lists, not tuples), to compare with a stored one."""
    return json.loads(json.dumps(record))


def tombstone(target: iscsi.Target, lun: iscsi.Lun) -> Put:
    return Put(TRASH + lun.serial, {"pool": target.pool, "file": lun.file, "target": target.name})


class IscsiService:
    def __init__(self, store: Store, new_serial: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.store = store
        self.new_serial = new_serial

    # --- reading ---------------------------------------------------------------------------
    def _records(self) -> dict[str, dict[str, Any]]:
        return {e.key[len(TARGETS):]: e.value for e in self.store.list(TARGETS)}

    def records(self) -> list[dict[str, Any]]:
        """Whole records, CHAP passwords included (for the export only)."""
        return sorted(self._records().values(), key=lambda record: record["name"])

    def targets(self) -> list[dict[str, Any]]:
        statuses = {e.key[len(STATUS):]: e.value for e in self.store.list(STATUS)}
        return [iscsi.public_view(record, statuses.get(record["name"])) for record in self.records()]

    def target(self, name: str) -> dict[str, Any]:
        return self._view(self._entry(name).value)

    def _view(self, record: dict[str, Any]) -> dict[str, Any]:
        return iscsi.public_view(plain(record), self.store.get(STATUS + record["name"]))

    def _entry(self, name: str):
        entry = self.store.get_entry(TARGETS + name)
        if entry is None:
            raise NotFound(f"no iSCSI target named {name!r}", target=name)
        return entry

    def targets_on_volume(self, pool: str, volume: str) -> list[str]:
        return sorted(r["name"] for r in self._records().values() if r["pool"] == pool and r["volume"] == volume)

    # --- where LUN files go ------------------------------------------------------------------
    def _pools_root(self, pool: str) -> str:
        """The pools directory on the pool's node, as its agent last reported (default /pools)."""
        status = self.store.get(POOL_STATUS + pool) or {}
        return status.get("path", f"/pools/{pool}").rsplit("/", 1)[0] or "/pools"

    def _place(self, data: Any) -> tuple[str, dict[str, str]]:
        """The pools root for a target's LUN files, and what is wrong with its pool or volume
        (they must exist, as for a share)."""
        problems: dict[str, str] = {}
        if not isinstance(data, dict):
            return "/pools", problems
        pool, volume = data.get("pool"), data.get("volume")
        if not (isinstance(pool, str) and pool and isinstance(volume, str) and volume):
            return "/pools", problems
        try:
            get_pool(self.store, pool)
        except NotFound:
            problems["pool"] = f"no pool named {pool!r}"
            return "/pools", problems
        if self.store.get(f"{VOLUMES}{pool}/{volume}") is None:
            problems["volume"] = f"pool {pool} has no volume named {volume!r}"
        shared = sorted(e.value["name"] for e in self.store.list("shares/")
                        if e.value.get("pool") == pool and e.value.get("volume") == volume)
        if shared:
            # A share's ACLs are applied over the whole tree and its users could read the LUNs.
            problems["volume"] = (f"volume {pool}/{volume} is shared as {', '.join(shared)}; LUN files "
                                  "must not be reachable through a share: use a volume of their own")
        return self._pools_root(pool), problems

    def _check_new(self, body: Any) -> iscsi.Target:
        root, problems = self._place(body)
        try:
            target = iscsi.check_target(body, root, self.new_serial)
        except ValidationError as error:
            problems.update(error.fields)
        raise_problems(problems)
        return target

    # --- targets ---------------------------------------------------------------------------
    def create_target(self, body: dict[str, Any]) -> dict[str, Any]:
        target = self._check_new(body)
        if self.store.get(TARGETS + target.name) is not None:
            raise Conflict(f"an iSCSI target named {target.name!r} exists already", target=target.name)
        owner = self.store.get(IQNS + target.iqn)
        if owner is not None:
            raise Conflict(f"IQN {target.iqn} is the IQN of target {owner['target']} already",
                           iqn=target.iqn, target=owner["target"])
        record = plain(target.to_dict())
        if not self.store.txn([absent(TARGETS + target.name), absent(IQNS + target.iqn)],
                              [Put(TARGETS + target.name, record), Put(IQNS + target.iqn, {"target": target.name})]):
            raise Conflict(f"target {target.name!r} or IQN {target.iqn} was taken meanwhile; try again")
        return self._view(record)

    def update_target(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(name)
        target = iscsi.check_changes(iscsi.Target.from_dict(entry.value), body)
        record = plain(target.to_dict())
        if not self.store.cas(TARGETS + name, record, entry.mod_revision):
            raise Conflict(f"target {name} changed meanwhile; try again")
        return self._view(record)

    def delete_target(self, name: str, confirm: str | None) -> None:
        """Delete a target and, through tombstones, its LUN files: with LUNs it needs confirm=<name>."""
        entry = self._entry(name)
        target = iscsi.Target.from_dict(entry.value)
        if (target.luns or confirm is not None) and confirm != name:
            count = len(target.luns)
            what = f"deletes the data of its {count} LUN{'s' if count != 1 else ''}" if count else "cannot be undone"
            raise ValidationError({"confirm": f"deleting target {name} {what}: repeat its name, confirm={name}"})
        if not self.store.txn([unchanged(TARGETS + name, entry.mod_revision)],
                              [Delete(TARGETS + name), Delete(IQNS + target.iqn),
                               *(tombstone(target, lun) for lun in target.luns)]):
            raise Conflict(f"target {name} changed meanwhile; nothing was deleted, try again")

    # --- LUNs ------------------------------------------------------------------------------
    @staticmethod
    def _find_lun(target: iscsi.Target, number: str | int) -> iscsi.Lun:
        for lun in target.luns:
            if str(lun.lun) == str(number):
                return lun
        raise NotFound(f"target {target.name} has no LUN {number}", target=target.name, lun=str(number))

    def _save(self, entry, target: iscsi.Target, extra: tuple = ()) -> None:
        if not self.store.txn([unchanged(TARGETS + target.name, entry.mod_revision)],
                              [Put(TARGETS + target.name, plain(target.to_dict())), *extra]):
            raise Conflict(f"target {target.name} changed meanwhile; try again")

    def add_lun(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(name)
        target = iscsi.Target.from_dict(entry.value)
        lun = iscsi.check_new_lun(target, body, self._pools_root(target.pool), self.new_serial)
        self._save(entry, replace(target, luns=tuple(sorted((*target.luns, lun), key=lambda x: x.lun))))
        return asdict(lun)

    def grow_lun(self, name: str, number: str | int, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(name)
        target = iscsi.Target.from_dict(entry.value)
        grown = iscsi.check_grow(self._find_lun(target, number), body)
        self._save(entry, replace(target, luns=tuple(grown if lun.lun == grown.lun else lun for lun in target.luns)))
        return asdict(grown)

    def delete_lun(self, name: str, number: str | int, confirm: str | None) -> None:
        entry = self._entry(name)
        target = iscsi.Target.from_dict(entry.value)
        lun = self._find_lun(target, number)
        if confirm != str(lun.lun):
            raise ValidationError({"confirm": f"deleting LUN {lun.lun} of target {name} deletes its data "
                                              f"({iscsi.size_text(lun.size)}): repeat its number, confirm={lun.lun}"})
        self._save(entry, replace(target, luns=tuple(other for other in target.luns if other is not lun)),
                   (tombstone(target, lun),))

    # --- import (the shares export/import in service.py) ---------------------------------
    def import_plan(self, entries: Any, problems: dict[str, str]) -> list[tuple[str, dict, dict | None, dict]]:
        """Check exported target records against this cluster. Problems go into `problems` (keyed
        iscsi_targets[<i>].<field>); for each good record: (key, record, the record stored under
        that key or None, {"claim": IQN key, "absent": keys that must be absent}) for the import's
        single transaction. A LUN whose serial is in the trash (its file still to be deleted) or
        belongs to another target is refused: the node would delete or share the imported file."""
        if entries is None:
            return []
        if not isinstance(entries, list):
            problems["iscsi_targets"] = "must be a list of target records"
            return []
        existing = self._records()
        iqn_owner = {record["iqn"]: name for name, record in existing.items()}
        serial_owner = {lun["serial"]: name for name, record in existing.items() for lun in record.get("luns", [])}
        trashed = {e.key[len(TRASH):] for e in self.store.list(TRASH)}
        plans = []
        for index, data in enumerate(entries):
            prefix = f"iscsi_targets[{index}]"
            root, found = self._place(data)
            try:
                target = iscsi.check_target(data, root, whole_record=True)
            except ValidationError as error:
                found.update(error.fields)
            if found:
                problems.update({f"{prefix}.{key}": value for key, value in found.items()})
                continue
            record = plain(target.to_dict())
            current = existing.get(target.name)
            if current is None:
                if iqn_owner.get(target.iqn, target.name) != target.name:
                    found["iqn"] = f"is the IQN of target {iqn_owner[target.iqn]}"
                for number, lun in enumerate(target.luns):
                    owner = serial_owner.get(lun.serial, target.name)
                    if owner != target.name:
                        found[f"luns[{number}].serial"] = f"is the serial of a LUN of target {owner}"
                    elif lun.serial in trashed:
                        found[f"luns[{number}].serial"] = ("its file is still being deleted (a LUN with this serial "
                                                           "was deleted); import again once the node has done so")
            if found:
                problems.update({f"{prefix}.{key}": value for key, value in found.items()})
                continue
            existing[target.name] = record       # a second entry of the same name is compared with this one
            iqn_owner[target.iqn] = target.name
            serial_owner.update({lun.serial: target.name for lun in target.luns})
            plans.append((TARGETS + target.name, record, current,
                          {"claim": IQNS + target.iqn, "absent": [TRASH + lun.serial for lun in target.luns]}))
        return plans
