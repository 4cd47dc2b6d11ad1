"""Users, groups and shares as desired state: what the API and the console ask for, checked
(model.py does the validation) and written to the store. The agents of the nodes apply it
(Samba's passdb, smb.conf, exports); this module never runs a command.

Writes are compare-and-swap transactions, so two requests never both take a name or an id:
a user's or group's id is claimed under `share-ids/<uid|gid>/<n>` in the same transaction that
creates the record. Records that others refer to cannot be deleted while referred to (409, naming
who refers to them).

Whether a share is served is read, not written, here: the node that owns the share's pool publishes
status/<node>/shares (the names it serves and the records it could not apply, after each pass) and
status/<node>/reconcile (how each area's last pass went); `share_state` decides from those what to show.
"""

from __future__ import annotations

import json
from typing import Any

from cairn.cluster import etcd_settings
from cairn.cluster.store import Delete, Put, Store, absent, unchanged
from cairn.errors import Conflict, NotFound, ValidationError
from cairn.shares import model
from cairn.shares.iscsi_service import IscsiService
from cairn.shares.ntlm import nt_hash
from cairn.storage.pools import POOL_STATUS, VOLUMES, get_pool, list_pools

USERS = "share-users/"
GROUPS = "share-groups/"
SHARES = "shares/"
IDS = "share-ids/"
PASSWORD_MIN, PASSWORD_MAX = 8, 128
EXPORT_FORMAT = "cairn-shares/1"
# An import is one transaction: etcd takes at most --max-txn-ops operations in each list of one
# (cairn.cluster.etcd_settings; 4096 on Cairn's members, ~1,900 users with their groups and shares).
MAX_IMPORT_WRITES = etcd_settings.MAX_TXN_OPS


def _public_user(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "nt_hash"}


def share_state(share: dict[str, Any], node: str | None, served: dict[str, Any] | None,
                last_pass: dict[str, Any] | None) -> dict[str, Any]:
    """Whether `share` is served, from what the node that owns its pool (`node`, None when the pool
    record is gone) last published: its status/<node>/shares (`served`) and the "shares" area of its
    status/<node>/reconcile (`last_pass`); either is None until the node has written it.

    served: the node lists the share. error: it does not, and the node named a problem with this
    share's record (that problem is the error), or its last shares pass failed (its error says why).
    pending: anything else (the node has not applied the share yet)."""
    names = {model.share_key(name) for name in (served or {}).get("served") or []}
    if node is not None and model.share_key(share["name"]) in names:
        return {"state": "served", "node": node, "error": None}
    own = ((served or {}).get("problems") or {}).get(SHARES + model.share_key(share["name"]))
    if node is not None and own:
        return {"state": "error", "node": node, "error": own}
    if node is not None and last_pass is not None and last_pass.get("ok") is False:
        return {"state": "error", "node": node,
                "error": last_pass.get("error") or f"the last shares pass on {node} failed"}
    return {"state": "pending", "node": node, "error": None}


class ShareService:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- reading ---------------------------------------------------------------------------
    def _records(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {e.key[len(prefix):]: e.value for e in self.store.list(prefix)}

    def users(self) -> list[dict[str, Any]]:
        return [_public_user(v) for v in self._records(USERS).values()]

    def user(self, name: str) -> dict[str, Any]:
        data = self.store.get(USERS + name)
        if data is None:
            raise NotFound(f"no user named {name!r}", user=name)
        return _public_user(data)

    def groups(self) -> list[dict[str, Any]]:
        return list(self._records(GROUPS).values())

    def group(self, name: str) -> dict[str, Any]:
        data = self.store.get(GROUPS + name)
        if data is None:
            raise NotFound(f"no group named {name!r}", group=name)
        return data

    def shares(self) -> list[dict[str, Any]]:
        return list(self._records(SHARES).values())

    def share(self, name: str) -> dict[str, Any]:
        data = self.store.get(SHARES + model.share_key(name))
        if data is None:
            raise NotFound(f"no share named {name!r}", share=name)
        return data

    def with_state(self, shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The shares, each with its "state" (share_state) added; the records stay as they are."""
        owners = {pool.name: pool.node for pool in list_pools(self.store)}
        published: dict[str, tuple[dict | None, dict | None]] = {}
        for node in {owners.get(share["pool"]) for share in shares} - {None}:
            report = self.store.get(f"status/{node}/reconcile") or {}
            published[node] = (self.store.get(f"status/{node}/shares"), report.get("shares"))
        result = []
        for share in shares:
            node = owners.get(share["pool"])
            served, last_pass = published.get(node, (None, None))
            result.append({**share, "state": share_state(share, node, served, last_pass)})
        return result

    def shares_on_volume(self, pool: str, volume: str) -> list[str]:
        return sorted(s["name"] for s in self.shares() if s["pool"] == pool and s["volume"] == volume)

    # --- users -----------------------------------------------------------------------------
    @staticmethod
    def _password(value: Any, problems: dict[str, str], required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
            problems["password"] = f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters"
            return None
        return value

    def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        problems: dict[str, str] = {}
        password = self._password(body.pop("password", None), problems, required=True)
        users = self._records(USERS)
        try:
            user = model.check_user(body, users, groups=self._records(GROUPS),
                                    taken_uids={u["uid"] for u in users.values()})
        except ValidationError as error:
            problems.update(error.fields)
            user = None
        model.raise_problems(problems)
        record = {**user.to_dict(), "nt_hash": nt_hash(password)}
        id_key = f"{IDS}uid/{user.uid}"
        if not self.store.txn([absent(USERS + user.name), absent(id_key)],
                              [Put(USERS + user.name, record), Put(id_key, {"user": user.name})]):
            raise Conflict(f"user {user.name!r} or uid {user.uid} was taken meanwhile; try again")
        return _public_user(record)

    def update_user(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.store.get_entry(USERS + name)
        if entry is None:
            raise NotFound(f"no user named {name!r}", user=name)
        problems: dict[str, str] = {}
        for key in sorted(set(body) - {"full_name", "groups", "disabled", "password"}):
            problems[key] = "cannot be changed (unknown or fixed: name and uid stay)"
        password = self._password(body.get("password"), problems, required=False)
        merged = {**_public_user(entry.value), **{k: v for k, v in body.items() if k != "password"}}
        others = {n: u for n, u in self._records(USERS).items() if n != name}
        try:
            user = model.check_user(merged, others, groups=self._records(GROUPS),
                                    taken_uids={u["uid"] for u in others.values()})
        except ValidationError as error:
            problems.update(error.fields)
        model.raise_problems(problems)
        record = {**user.to_dict(), "nt_hash": nt_hash(password) if password else entry.value["nt_hash"]}
        if not self.store.cas(USERS + name, record, entry.mod_revision):
            raise Conflict(f"user {name} changed meanwhile; try again")
        return _public_user(record)

    def delete_user(self, name: str) -> None:
        entry = self.store.get_entry(USERS + name)
        if entry is None:
            raise NotFound(f"no user named {name!r}", user=name)
        using = sorted(s["name"] for s in self.shares()
                       if any(p["principal"] == f"user:{name}" for p in s.get("permissions", [])))
        if using:
            raise Conflict(f"user {name} has permissions on shares {', '.join(using)}: remove them first",
                           shares=using)
        self.store.txn([unchanged(USERS + name, entry.mod_revision)],
                       [Delete(USERS + name), Delete(f"{IDS}uid/{entry.value['uid']}")])

    # --- groups ----------------------------------------------------------------------------
    def create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        groups = self._records(GROUPS)
        group = model.check_group(body, groups, taken_gids={g["gid"] for g in groups.values()})
        id_key = f"{IDS}gid/{group.gid}"
        if not self.store.txn([absent(GROUPS + group.name), absent(id_key)],
                              [Put(GROUPS + group.name, group.to_dict()), Put(id_key, {"group": group.name})]):
            raise Conflict(f"group {group.name!r} or gid {group.gid} was taken meanwhile; try again")
        return group.to_dict()

    def delete_group(self, name: str) -> None:
        entry = self.store.get_entry(GROUPS + name)
        if entry is None:
            raise NotFound(f"no group named {name!r}", group=name)
        members = sorted(u["name"] for u in self.users() if name in u.get("groups", []))
        using = sorted(s["name"] for s in self.shares()
                       if any(p["principal"] == f"group:{name}" for p in s.get("permissions", [])))
        if members or using:
            raise Conflict(f"group {name} is still used: " + "; ".join(
                part for part in (f"members {', '.join(members)}" if members else "",
                                  f"permissions on shares {', '.join(using)}" if using else "") if part),
                members=members, shares=using)
        self.store.txn([unchanged(GROUPS + name, entry.mod_revision)],
                       [Delete(GROUPS + name), Delete(f"{IDS}gid/{entry.value['gid']}")])

    # --- shares ----------------------------------------------------------------------------
    def _check_share(self, body: dict[str, Any], taken: list[str]) -> model.Share:
        return self._check_share_against(body, self._records(USERS), self._records(GROUPS), taken)

    def _check_share_against(self, body: Any, users: dict, groups: dict, taken: list[str]) -> model.Share:
        if not isinstance(body, dict):
            raise ValidationError({"share": "must be an object"})
        body = dict(body)
        pool, volume = body.get("pool"), body.get("volume")
        root = "/pools"
        if isinstance(pool, str) and isinstance(volume, str):
            try:
                get_pool(self.store, pool)
            except NotFound:
                raise ValidationError({"pool": f"no pool named {pool!r}"}) from None
            if self.store.get(f"{VOLUMES}{pool}/{volume}") is None:
                raise ValidationError({"volume": f"pool {pool} has no volume named {volume!r}"})
            targets = sorted(e.value["name"] for e in self.store.list("iscsi-targets/")
                             if e.value.get("pool") == pool and e.value.get("volume") == volume)
            if targets:
                raise ValidationError({"volume": f"volume {pool}/{volume} holds the LUNs of iSCSI target "
                                                 f"{', '.join(targets)}; share another volume"})
            status = self.store.get(POOL_STATUS + pool) or {}
            root = status.get("path", f"/pools/{pool}").rsplit("/", 1)[0] or "/pools"
            body.setdefault("path", model.volume_path(root, pool, volume))
        return model.check_share(body, users, groups, pools_root=root, taken_names=taken)

    def create_share(self, body: dict[str, Any]) -> dict[str, Any]:
        share = self._check_share(body, [s["name"] for s in self.shares()])
        key = SHARES + model.share_key(share.name)
        if not self.store.create(key, share.to_dict()):
            raise Conflict(f"a share named {share.name!r} already exists")
        return share.to_dict()

    def update_share(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        key = SHARES + model.share_key(name)
        entry = self.store.get_entry(key)
        if entry is None:
            raise NotFound(f"no share named {name!r}", share=name)
        if "name" in body and body["name"] != entry.value["name"]:
            raise ValidationError({"name": "a share keeps its name (make a new share to rename)"})
        merged = {**entry.value, **body}
        share = self._check_share(merged, [s["name"] for s in self.shares() if s["name"] != entry.value["name"]])
        if not self.store.cas(key, share.to_dict(), entry.mod_revision):
            raise Conflict(f"share {name} changed meanwhile; try again")
        return share.to_dict()

    def delete_share(self, name: str) -> None:
        if not self.store.delete(SHARES + model.share_key(name)):
            raise NotFound(f"no share named {name!r}", share=name)

    # --- export / import --------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """Users (with their NT hashes), groups, shares and iSCSI targets (with their CHAP
        passwords) as one document, to rebuild from."""
        return {"format": EXPORT_FORMAT,
                "groups": sorted(self._records(GROUPS).values(), key=lambda g: g["name"]),
                "users": sorted(self._records(USERS).values(), key=lambda u: u["name"]),
                "shares": sorted(self.shares(), key=lambda s: s["name"]),
                "iscsi_targets": IscsiService(self.store).records()}

    def import_config(self, document: Any) -> dict[str, Any]:
        """Add what the document holds. Everything is checked first (every problem reported at
        once, by place in the document) and written in one transaction, or nothing is.
        Records that exist already and are identical are skipped; different ones are refused.
        Documents from before iSCSI targets were exported (no "iscsi_targets") import as they did."""
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise ValidationError({"format": f"must be {EXPORT_FORMAT!r} (a document from the export)"})
        problems: dict[str, str] = {}
        groups, users = dict(self._records(GROUPS)), dict(self._records(USERS))
        writes: list[Put] = []
        compares = []
        counts = {"groups": 0, "users": 0, "shares": 0, "iscsi_targets": 0, "unchanged": 0}

        def add(kind: str, key: str, record: dict[str, Any], existing: dict[str, Any] | None,
                id_key: str | None = None, owner: dict | None = None, must_be_absent: list[str] = ()) -> None:
            record = json.loads(json.dumps(record))      # as the store keeps it (lists, not tuples)
            if existing is not None:
                if existing == record:
                    counts["unchanged"] += 1
                else:
                    problems[f"{kind}.{record['name']}"] = "exists here with different settings"
                return
            compares.append(absent(key))
            writes.append(Put(key, record))
            if id_key:
                compares.append(absent(id_key))
                writes.append(Put(id_key, owner))
            compares.extend(absent(other) for other in must_be_absent)
            counts[kind] += 1

        for index, data in enumerate(document.get("groups") or []):
            try:
                others = {n: g for n, g in groups.items() if n != (data or {}).get("name")}
                group = model.check_group(data, others, taken_gids={g["gid"] for g in others.values()})
            except ValidationError as error:
                problems.update({f"groups[{index}].{k}": v for k, v in error.fields.items()})
                continue
            add("groups", GROUPS + group.name, group.to_dict(), groups.get(group.name),
                f"{IDS}gid/{group.gid}", {"group": group.name})
            groups[group.name] = group.to_dict()
        for index, data in enumerate(document.get("users") or []):
            data = dict(data or {})
            hashed = data.pop("nt_hash", None)
            note = model.nt_hash_problem(hashed)
            if note:
                problems[f"users[{index}].nt_hash"] = note
            try:
                others = {n: u for n, u in users.items() if n != data.get("name")}
                user = model.check_user(data, others, groups=groups, taken_uids={u["uid"] for u in others.values()})
            except ValidationError as error:
                problems.update({f"users[{index}].{k}": v for k, v in error.fields.items()})
                continue
            record = {**user.to_dict(), "nt_hash": hashed}
            add("users", USERS + user.name, record, users.get(user.name), f"{IDS}uid/{user.uid}", {"user": user.name})
            users[user.name] = record
        existing_shares = {model.share_key(s["name"]): s for s in self.shares()}
        for index, data in enumerate(document.get("shares") or []):
            try:
                share = self._check_share_against(data, users, groups,
                                                  [s["name"] for k, s in existing_shares.items()
                                                   if k != model.share_key((data or {}).get("name", ""))])
            except ValidationError as error:
                problems.update({f"shares[{index}].{k}": v for k, v in error.fields.items()})
                continue
            key = SHARES + model.share_key(share.name)
            add("shares", key, share.to_dict(), existing_shares.get(model.share_key(share.name)))
        for key, record, existing, keys in IscsiService(self.store).import_plan(document.get("iscsi_targets"),
                                                                                problems):
            add("iscsi_targets", key, record, existing, keys["claim"], {"target": record["name"]}, keys["absent"])
        model.raise_problems(problems)
        if len(writes) > MAX_IMPORT_WRITES:
            records = sum(counts[kind] for kind in ("groups", "users", "shares", "iscsi_targets"))
            raise ValidationError({"import": (
                f"this document adds {records} records ({len(writes)} writes); one import (one "
                f"transaction, all or nothing) takes at most {MAX_IMPORT_WRITES} writes: import it in parts")})
        if writes and not self.store.txn(compares, writes):
            raise Conflict("users, groups, shares or iSCSI targets changed while importing; nothing was imported, "
                           "try again")
        return counts
