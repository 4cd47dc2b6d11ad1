"""iSCSI targets as desired state: through the API of a real stack on a real pool (btrfs on a loop
device), and through IscsiService on a real etcd where the transactions' writes are looked at
directly: every field error at once, conflicts as 409, LUNs grown never shrunk, deletions confirmed
and leaving a tombstone per LUN file in the same transaction, the CHAP password never shown, the
volume kept while a target uses it, and export/import of targets all or nothing."""

from __future__ import annotations

import itertools
import json
import re
import sys

import pytest

from cairn.cluster.store import Put
from cairn.errors import Conflict, NotFound, ValidationError
from cairn.jobs.service import JobService
from cairn.runner import Runner
from cairn.shares.iscsi_service import IscsiService
from cairn.shares.service import ShareService
from cairn.storage import model as storage_model
from cairn.storage.service import StorageService
from support import finish_job, storage_stack

DEBIAN = "iqn.1993-08.org.debian:01:abcdef"
WINDOWS = "iqn.1991-05.com.microsoft:desk-01.example.com"
GiB = 1 << 30


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with storage_stack(tmp_path_factory.mktemp("iscsi"), 1, 300) as (stack, loops):
        session = stack.session()
        for method, path, body in (("POST", "/pools", {"name": "tank", "node": stack.node, "disks": loops.ids(),
                                                       "profile": "single"}),
                                   ("POST", "/pools/tank/volumes", {"name": "luns"})):
            job = finish_job(session, stack, method, path, json=body)
            assert job["state"] == "success", job

        def call(method, path, **kwargs):
            return session.request(method, stack.url + "/api/v1" + path, **kwargs)
        yield stack, call


# --- through the API of a running stack -------------------------------------------------------
def test_a_target_is_stored_exactly_as_the_node_reads_it(api):
    stack, call = api
    made = call("POST", "/iscsi-targets", json={"name": "vmstore", "pool": "tank", "volume": "luns",
                                                "initiators": [DEBIAN], "luns": [{"size": "10G"}],
                                                "chap": {"user": "vmhost", "password": "twelve-chars"}})
    assert made.status_code == 201, made.text
    record = stack.store().get("iscsi-targets/vmstore")
    serial = record["luns"][0]["serial"]
    assert re.fullmatch(r"[0-9a-f]{32}", serial)
    pools_root = str(stack.cfg.storage.pools_root)
    assert record == {
        "name": "vmstore", "iqn": "iqn.2026-11.invalid.cairn:vmstore", "pool": "tank", "volume": "luns",
        "description": "",
        "luns": [{"lun": 0, "size": 10 * GiB, "serial": serial,
                  "file": f"{pools_root}/tank/luns/.iscsi/vmstore/lun0-{serial[:8]}.img"}],
        "initiators": [DEBIAN],
        "chap": {"user": "vmhost", "password": "twelve-chars"},
    }
    shown = call("GET", "/iscsi-targets/vmstore").json()
    assert shown["chap"] == {"user": "vmhost", "password_set": True}
    assert {k: v for k, v in shown.items() if k not in ("chap", "status")} == \
        {k: v for k, v in record.items() if k != "chap"}
    assert made.json()["chap"] == {"user": "vmhost", "password_set": True}
    listed = call("GET", "/iscsi-targets").json()["targets"]
    assert [t["name"] for t in listed] == ["vmstore"]
    assert "twelve-chars" not in json.dumps(listed) + json.dumps(shown) + made.text


def test_bad_input_names_every_field_at_once(api):
    stack, call = api
    bad = call("POST", "/iscsi-targets", json={"name": "Bad_Name", "iqn": "IQN.2010-01.org.example:x",
                                               "pool": "tank", "volume": "nope", "initiators": [DEBIAN, "nope", DEBIAN],
                                               "chap": {"user": "u", "password": "too-short"},
                                               "luns": [{"size": "1000"}, {"size": "1G", "lun": 300}]})
    assert bad.status_code == 400
    fields = bad.json()["error"]["fields"]
    assert fields == {
        "name": "target name must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit and not ending with '-'",
        "iqn": "iSCSI names are lowercase: did you mean iqn.2010-01.org.example:x?",
        "volume": "pool tank has no volume named 'nope'",
        "initiators[1]": fields["initiators[1]"],
        "initiators[2]": f"{DEBIAN} is listed twice (also initiators[0])",
        "chap.password": "must be 12 to 16 characters, not 9 (the Windows iSCSI initiator refuses CHAP secrets "
                         "of any other length)",
        "luns[0].size": "must be at least 1 MiB (1048576 bytes), not 1000",
        "luns[1].lun": "LUN number must be a whole number from 0 to 255",
    }
    assert fields["initiators[1]"].startswith("must be an iSCSI name")
    missing = call("POST", "/iscsi-targets", json={"name": "x", "pool": "pond", "volume": "luns", "initiators": [DEBIAN]})
    assert missing.status_code == 400 and missing.json()["error"]["fields"] == {"pool": "no pool named 'pond'"}
    empty = call("POST", "/iscsi-targets", json={})
    assert empty.status_code == 400
    assert set(empty.json()["error"]["fields"]) == {"name", "pool", "volume", "initiators"}


def test_a_taken_name_or_iqn_is_a_conflict(api):
    stack, call = api
    again = call("POST", "/iscsi-targets", json={"name": "vmstore", "pool": "tank", "volume": "luns",
                                                 "initiators": [DEBIAN]})
    assert again.status_code == 409 and "an iSCSI target named 'vmstore' exists already" in again.text
    same_iqn = call("POST", "/iscsi-targets", json={"name": "other", "iqn": "iqn.2026-11.invalid.cairn:vmstore",
                                                    "pool": "tank", "volume": "luns", "initiators": [DEBIAN]})
    assert same_iqn.status_code == 409
    assert same_iqn.json()["error"]["message"] == \
        "IQN iqn.2026-11.invalid.cairn:vmstore is the IQN of target vmstore already"
    assert call("GET", "/iscsi-targets/other").status_code == 404


def test_luns_are_added_grown_never_shrunk_and_deleted_only_when_confirmed(api):
    stack, call = api
    added = call("POST", "/iscsi-targets/vmstore/luns", json={"size": 512 << 20})
    assert added.status_code == 201, added.text
    assert (added.json()["lun"], added.json()["size"]) == (1, 512 << 20)
    taken = call("POST", "/iscsi-targets/vmstore/luns", json={"size": "1G", "lun": 1})
    assert taken.status_code == 409 and "target vmstore has a LUN 1 already" in taken.text
    grown = call("PATCH", "/iscsi-targets/vmstore/luns/1", json={"size": "2G"})
    assert grown.status_code == 200 and grown.json()["size"] == 2 * GiB
    assert grown.json()["serial"] == added.json()["serial"] and grown.json()["file"] == added.json()["file"]
    shrunk = call("PATCH", "/iscsi-targets/vmstore/luns/1", json={"size": "1G"})
    assert shrunk.status_code == 400
    assert shrunk.json()["error"]["fields"] == {"size": "1 GiB (1073741824 bytes) is smaller than LUN 1 (2 GiB "
                                                        "(2147483648 bytes)): would cut off data; shrinking is not supported"}
    assert call("PATCH", "/iscsi-targets/vmstore/luns/7", json={"size": "2G"}).status_code == 404
    unconfirmed = call("DELETE", "/iscsi-targets/vmstore/luns/1")
    assert unconfirmed.status_code == 400 and "confirm=1" in unconfirmed.json()["error"]["fields"]["confirm"]
    assert call("DELETE", "/iscsi-targets/vmstore/luns/1", params={"confirm": "vmstore"}).status_code == 400
    assert [lun["lun"] for lun in stack.store().get("iscsi-targets/vmstore")["luns"]] == [0, 1]
    deleted = call("DELETE", "/iscsi-targets/vmstore/luns/1", params={"confirm": "1"})
    assert deleted.status_code == 200, deleted.text
    assert [lun["lun"] for lun in call("GET", "/iscsi-targets/vmstore").json()["luns"]] == [0]


def test_changes_keep_what_is_fixed_and_never_show_the_password(api):
    stack, call = api
    changed = call("PATCH", "/iscsi-targets/vmstore", json={"description": "VM disks",
                                                            "initiators": [DEBIAN, WINDOWS],
                                                            "chap": {"user": "esx"}})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["description"], changed.json()["initiators"], changed.json()["chap"]) == \
        ("VM disks", [DEBIAN, WINDOWS], {"user": "esx", "password_set": True})
    assert stack.store().get("iscsi-targets/vmstore")["chap"] == {"user": "esx", "password": "twelve-chars"}
    fixed = call("PATCH", "/iscsi-targets/vmstore", json={"name": "renamed", "pool": "tank", "volume": "other"})
    assert fixed.status_code == 400
    assert fixed.json()["error"]["fields"] == {
        "name": "cannot be changed: a target keeps its name (make a new target to rename)",
        "volume": "cannot be changed: a target's LUN files stay in their volume (make a new target elsewhere)"}
    no_chap = call("PATCH", "/iscsi-targets/vmstore", json={"chap": None})
    assert no_chap.status_code == 200 and no_chap.json()["chap"] is None
    assert stack.store().get("iscsi-targets/vmstore")["chap"] is None
    assert call("PATCH", "/iscsi-targets/ghost", json={"description": "x"}).status_code == 404


def test_the_volume_stays_while_a_target_uses_it(api):
    stack, call = api
    refused = call("DELETE", "/pools/tank/volumes/luns", params={"confirm": "luns"})
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "volume luns is in use by iSCSI target vmstore: delete those first"


def test_cairnctl_iscsi(api, tmp_path):
    stack, call = api
    env = {"XDG_CONFIG_HOME": str(tmp_path)}

    def ctl(*args, input=None, check=True):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env, input=input,
                            check=check, timeout=120)

    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    shown = ctl("iscsi", "create", "backup", "--pool", "tank", "--volume", "luns", "--initiator", WINDOWS,
                "--lun", "1G", "--lun", "3G", "--chap-user", "winhost", "--chap-password-stdin",
                input="win-secret-16ch\n").stdout
    assert shown.splitlines()[0] == "iSCSI target backup: iqn.2026-11.invalid.cairn:backup (pool tank, volume luns)"
    assert "chap: user winhost (password set)" in shown and "win-secret" not in shown
    listed = ctl("iscsi", "list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "POOL", "VOLUME", "LUNS", "INITIATORS", "CHAP", "IQN"]
    assert [line.split()[0] for line in listed[1:]] == ["backup", "vmstore"]
    assert ctl("iscsi", "lun", "add", "backup", "512M").stdout.startswith("lun 2: 512.0 MiB")
    assert ctl("iscsi", "lun", "grow", "backup", "2", "1G").stdout.startswith("lun 2: 1.0 GiB")
    shrink = ctl("iscsi", "lun", "grow", "backup", "2", "512M", check=False)
    assert shrink.returncode == 1 and "shrinking is not supported" in shrink.stderr
    ctl("iscsi", "lun", "delete", "backup", "2", "--confirm", "2")
    assert [lun["lun"] for lun in json.loads(ctl("--json", "iscsi", "show", "backup").stdout)["luns"]] == [0, 1]
    refused = ctl("iscsi", "delete", "backup", check=False)
    assert refused.returncode == 1 and "repeat its name, confirm=backup" in refused.stderr
    assert ctl("iscsi", "delete", "backup", "--confirm", "backup").stdout.strip() == "iSCSI target backup deleted"
    assert call("GET", "/iscsi-targets/backup").status_code == 404


def test_export_then_import_rebuilds_targets_or_nothing(api):
    stack, call = api
    document = call("GET", "/shares-config").json()
    assert [t["name"] for t in document["iscsi_targets"]] == ["vmstore"]
    assert document["iscsi_targets"][0] == stack.store().get("iscsi-targets/vmstore"), \
        "the export is the whole record (CHAP password included) to rebuild from"
    again = call("POST", "/shares-config", json=document)
    assert again.status_code == 200 and again.json()["iscsi_targets"] == 0 and again.json()["unchanged"] >= 1

    broken = {**document, "iscsi_targets": document["iscsi_targets"] + [
        {**document["iscsi_targets"][0], "name": "copy", "luns": []},
        {"name": "ghost", "pool": "tank", "volume": "gone", "initiators": [DEBIAN], "luns": []}]}
    refused = call("POST", "/shares-config", json=broken)
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {
        "iscsi_targets[1].iqn": "is the IQN of target vmstore",
        "iscsi_targets[2].volume": "pool tank has no volume named 'gone'"}

    assert call("DELETE", "/iscsi-targets/vmstore", params={"confirm": "vmstore"}).status_code == 200
    assert call("GET", "/iscsi-targets").json()["targets"] == []
    old = {key: value for key, value in document.items() if key != "iscsi_targets"}
    assert call("POST", "/shares-config", json=old).status_code == 200, "documents from before iSCSI still import"
    assert call("GET", "/iscsi-targets").json()["targets"] == []
    # the deleted LUNs' files wait in the trash (a fresh import of them is refused while they do: see
    # test_an_import_never_takes_a_serial_whose_file_is_still_to_be_deleted); the target itself comes back
    without_luns = {**document, "iscsi_targets": [{**document["iscsi_targets"][0], "luns": []}]}
    rebuilt = call("POST", "/shares-config", json=without_luns)
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["iscsi_targets"] == 1
    assert stack.store().get("iscsi-targets/vmstore") == without_luns["iscsi_targets"][0]


def test_deleting_the_last_target_frees_the_volume(api):
    stack, call = api
    for target in call("GET", "/iscsi-targets").json()["targets"]:
        assert call("DELETE", f"/iscsi-targets/{target['name']}", params={"confirm": target["name"]}).status_code == 200
    assert call("DELETE", "/pools/tank/volumes/luns", params={"confirm": "luns"}).status_code == 202


# --- the service on a real etcd: what each transaction writes --------------------------------
@pytest.fixture
def service(store):
    pool = storage_model.Pool("tank", "node-a", "single", "dup", "none", ("disk-1",), state="online")
    store.put("pools/tank", pool.to_dict())
    store.put("pool-status/tank", {"path": "/srv/pools/tank"})
    store.put("volumes/tank/luns", storage_model.Volume("tank", "luns").to_dict())
    counter = itertools.count(1)
    return IscsiService(store, new_serial=lambda: f"{next(counter):08x}" * 4)


def create(service, **changes):
    body = {"name": "vmstore", "pool": "tank", "volume": "luns", "initiators": [DEBIAN],
            "luns": [{"size": "1G"}, {"size": "2G"}]}
    body.update(changes)
    return service.create_target(body)


def test_create_claims_the_iqn_and_lun_files_follow_the_reported_pools_root(service, store):
    create(service)
    assert store.get("iscsi-iqns/iqn.2026-11.invalid.cairn:vmstore") == {"target": "vmstore"}
    assert [lun["file"] for lun in store.get("iscsi-targets/vmstore")["luns"]] == [
        "/srv/pools/tank/luns/.iscsi/vmstore/lun0-00000001.img", "/srv/pools/tank/luns/.iscsi/vmstore/lun1-00000002.img"]


def test_the_node_status_is_shown_under_status(service, store):
    create(service)
    assert service.target("vmstore")["status"] is None
    store.put("iscsi-status/vmstore", {"state": "serving", "sessions": [DEBIAN]})
    assert service.target("vmstore")["status"] == {"state": "serving", "sessions": [DEBIAN]}
    assert service.targets()[0]["status"] == {"state": "serving", "sessions": [DEBIAN]}


def test_deleting_a_lun_leaves_its_tombstone_in_the_same_revision(service, store):
    create(service)
    service.delete_lun("vmstore", "1", confirm="1")
    entry = store.get_entry("iscsi-trash/" + "00000002" * 4)
    assert entry.value == {"pool": "tank", "file": "/srv/pools/tank/luns/.iscsi/vmstore/lun1-00000002.img",
                           "target": "vmstore"}
    assert entry.mod_revision == store.get_entry("iscsi-targets/vmstore").mod_revision
    assert [lun["lun"] for lun in store.get("iscsi-targets/vmstore")["luns"]] == [0]
    with pytest.raises(NotFound, match="target vmstore has no LUN 1"):
        service.delete_lun("vmstore", "1", confirm="1")


def test_deleting_a_target_needs_confirm_and_trashes_every_lun_at_once(service, store):
    create(service)
    with pytest.raises(ValidationError) as caught:
        service.delete_target("vmstore", None)
    assert caught.value.fields == {"confirm": "deleting target vmstore deletes the data of its 2 LUNs: repeat its "
                                              "name, confirm=vmstore"}
    assert store.get("iscsi-targets/vmstore") is not None
    before = store.revision()
    service.delete_target("vmstore", "vmstore")
    assert store.get("iscsi-targets/vmstore") is None
    assert store.get("iscsi-iqns/iqn.2026-11.invalid.cairn:vmstore") is None
    trash = {e.key: (e.value, e.mod_revision) for e in store.list("iscsi-trash/")}
    assert trash == {
        "iscsi-trash/" + "00000001" * 4: ({"pool": "tank", "target": "vmstore",
                                           "file": "/srv/pools/tank/luns/.iscsi/vmstore/lun0-00000001.img"}, before + 1),
        "iscsi-trash/" + "00000002" * 4: ({"pool": "tank", "target": "vmstore",
                                           "file": "/srv/pools/tank/luns/.iscsi/vmstore/lun1-00000002.img"}, before + 1),
    }
    create(service, luns=[])
    service.delete_target("vmstore", None)       # no LUNs, no data: no confirmation needed
    assert store.get("iscsi-targets/vmstore") is None


def test_a_write_based_on_a_stale_read_is_refused(service, store, monkeypatch):
    create(service)
    stale = store.get_entry("iscsi-targets/vmstore")
    store.put("iscsi-targets/vmstore", {**stale.value, "description": "changed by someone else"})
    monkeypatch.setattr(service, "_entry", lambda name: stale)
    with pytest.raises(Conflict, match="target vmstore changed meanwhile"):
        service.add_lun("vmstore", {"size": "1G"})
    with pytest.raises(Conflict, match="nothing was deleted"):
        service.delete_target("vmstore", "vmstore")
    assert store.list("iscsi-trash/") == []
    assert store.get("iscsi-targets/vmstore")["description"] == "changed by someone else"


def test_a_claimed_iqn_is_a_conflict_even_for_a_target_made_meanwhile(service, store):
    store.txn([], [Put("iscsi-iqns/iqn.2010-01.org.example:vm", {"target": "racer"})])
    with pytest.raises(Conflict, match="is the IQN of target racer"):
        create(service, name="slow", iqn="iqn.2010-01.org.example:vm")
    assert store.get("iscsi-targets/slow") is None


def test_an_import_never_takes_a_serial_whose_file_is_still_to_be_deleted(service, store):
    create(service)
    document = ShareService(store).export()
    record = document["iscsi_targets"][0]
    assert record["chap"] is None and len(record["luns"]) == 2
    service.delete_target("vmstore", "vmstore")
    with pytest.raises(ValidationError) as caught:
        ShareService(store).import_config(document)
    assert set(caught.value.fields) == {"iscsi_targets[0].luns[0].serial", "iscsi_targets[0].luns[1].serial"}
    assert store.get("iscsi-targets/vmstore") is None
    for entry in store.list("iscsi-trash/"):      # the node has deleted the files
        store.delete(entry.key)
    assert ShareService(store).import_config(document)["iscsi_targets"] == 1
    assert store.get("iscsi-targets/vmstore") == record
    assert store.get("iscsi-iqns/iqn.2026-11.invalid.cairn:vmstore") == {"target": "vmstore"}


def test_a_volume_holds_either_shares_or_luns_and_a_shared_pool_is_not_destroyed(service, store):
    create(service)
    shares = ShareService(store)
    with pytest.raises(ValidationError) as refused:
        shares.create_share({"name": "Luns", "pool": "tank", "volume": "luns", "smb": {}})
    assert "holds the LUNs of iSCSI target vmstore" in refused.value.fields["volume"]
    store.put("volumes/tank/files", storage_model.Volume("tank", "files").to_dict())
    shares.create_share({"name": "Files", "pool": "tank", "volume": "files", "smb": {}})
    with pytest.raises(ValidationError) as refused:
        create(service, name="other", volume="files")
    assert "shared as Files" in refused.value.fields["volume"]
    with pytest.raises(Conflict) as busy:
        StorageService(store, JobService(store)).destroy_pool("tank", "tank")
    assert "files: Files" in busy.value.message and "luns: iSCSI target vmstore" in busy.value.message
