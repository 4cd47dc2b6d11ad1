"""The node side of iSCSI with a real etcd: one target record the node cannot use (written straight
into the store, bypassing the API's checks) and one whose LIO step fails never stop the others;
each target's iscsi-status says how it went, the pass names what it could not apply, and an
unchanged pass rewrites no status.

LIO itself (configfs, rtslib) is not on this host: the effects are recorded here, and the
appliance test (tests/e2e/test_shares_appliance.py) drives the real kernel target."""

from __future__ import annotations

from types import SimpleNamespace

from cairn.agent.reconcile import ReconcileLoop
from cairn.shares import iscsi
from cairn.shares.lio import STATUS, Lio, LioApplier
from cairn.storage import model as storage_model

CLIENT = "iqn.1993-08.org.debian:01:client"


class NoLio:
    """What LioApplier asks of rtslib outside its effects."""
    class RTSLibError(Exception):
        pass

    @staticmethod
    def RTSRoot():
        return SimpleNamespace(targets=[], storage_objects=[])


class RecordedApplier(LioApplier):
    def __init__(self, store, failing_iqn: str) -> None:
        super().__init__(store, "n1", lambda pool: True, rtslib=NoLio(), pools_root="/pools")
        self.failing_iqn = failing_iqn
        self.done: list[tuple[str, str]] = []

    def actual(self) -> Lio:
        return Lio(file_sizes={lun["file"]: -1 for r in self._records for lun in r["luns"]})   # a fresh node

    def _apply(self, action) -> None:
        if action.target == self.failing_iqn and action.kind == "target-create":
            raise self.rtslib.RTSLibError("Could not create Target in configFS")
        self.done.append((action.kind, action.target or action.backstore.name))


def target(name: str, serial: str) -> dict:
    made = iscsi.check_target({"name": name, "pool": "tank", "volume": "luns", "initiators": [CLIENT],
                               "luns": [{"size": "1G"}]}, "/pools", new_serial=lambda: serial)
    return made.to_dict()


def test_a_bad_record_and_a_failed_target_do_not_stop_the_good_one(store):
    store.put("pools/tank", storage_model.Pool("tank", "n1", "single", "dup", "none", ("d",), state="online").to_dict())
    store.put("iscsi-targets/vmstore", target("vmstore", "a" * 32))
    store.put("iscsi-targets/backup", target("backup", "b" * 32))
    store.put("iscsi-targets/bad\n", dict(target("bad", "c" * 32), name="bad\n"))
    applier = RecordedApplier(store, failing_iqn=iscsi.default_iqn("backup"))
    loop = ReconcileLoop(store, "n1", [applier])

    report = loop.run_once()["iscsi"]
    assert not report.ok and "iscsi-targets/backup" in report.error and repr("iscsi-targets/bad\n") in report.error
    vmstore = iscsi.default_iqn("vmstore")
    assert [step for step in applier.done if step[1] in (vmstore, "cairn-" + "a" * 16)] == [
        ("file", "cairn-" + "a" * 16), ("backstore-create", "cairn-" + "a" * 16), ("target-create", vmstore),
        ("lun-create", vmstore), ("acl-set", vmstore)]
    assert not [step for step in applier.done if step[1] == iscsi.default_iqn("backup")]   # skipped after the failure
    assert store.get(STATUS + "vmstore") == {"node": "n1", "port": 3260, "sessions": [],
                                             "luns": {"0": {"size": 1 << 30, "allocated": 0}}}
    assert store.get(STATUS + "backup")["error"] == (f"create target {iscsi.default_iqn('backup')}: "
                                                     "Could not create Target in configFS")
    assert store.get(STATUS + "bad\n")["error"].startswith("name: target name must be")

    revisions = {name: store.get_entry(STATUS + name).mod_revision for name in ("vmstore", "backup", "bad\n")}
    applier.failing_iqn = None
    assert not loop.run_once()["iscsi"].ok           # the bad record is still there, and still named
    assert store.get_entry(STATUS + "vmstore").mod_revision == revisions["vmstore"]   # unchanged: not rewritten
    assert store.get_entry(STATUS + "bad\n").mod_revision == revisions["bad\n"]
    assert "error" not in store.get(STATUS + "backup")
