"""Store history stays bounded: records are written only when they change, job and event history
is pruned by age and count, the local etcd member is defragmented, and the quota is watched."""

import time

from cairn.cluster import etcd_settings, events, nodes
from cairn.cluster.history import HistoryKeeper, HistorySettings
from cairn.jobs.service import JobService
from cairn.system.inventory import read_inventory


def test_an_unchanged_inventory_is_not_written_again(store):
    now = [1000.0]
    publisher = nodes.NodePublisher(store, "n1", clock=lambda: now[0])
    inventory = read_inventory().to_record()
    assert publisher.publish(inventory, "1.0") is True
    first = store.get_entry("nodes/n1").mod_revision
    for step in range(30):                        # a minute of heartbeats on an idle node
        now[0] += 2
        assert publisher.publish({**inventory, "load_1m": inventory["load_1m"] + 0.1}, "1.0") is False
    assert store.get_entry("nodes/n1").mod_revision == first
    assert publisher.publish({**inventory, "kernel": "7.0"}, "1.0") is True     # a real change: at once


def test_sampled_figures_are_republished_only_when_they_move_and_not_often():
    last = {"name": "n", "memory_total": 1000, "memory_available": 500, "load_1m": 0.2, "sampled_at": 0.0}
    assert not nodes.worth_publishing(last, {**last, "memory_available": 530, "sampled_at": 90.0}, 90.0)
    assert not nodes.worth_publishing(last, {**last, "memory_available": 300, "sampled_at": 30.0}, 30.0)
    assert nodes.worth_publishing(last, {**last, "memory_available": 300, "sampled_at": 90.0}, 90.0)
    assert nodes.worth_publishing(last, {**last, "load_1m": 0.9, "sampled_at": 61.0}, 61.0)
    assert nodes.worth_publishing(last, {**last, "cpus": 8, "sampled_at": 1.0}, 1.0)


def test_node_listing_computes_uptime_from_the_boot_time(store):
    store.put("nodes/n1", {"name": "n1", "booted_at": 1000.0, "sampled_at": 1500.0})
    (node,) = nodes.list_nodes(store, now=4600.0)
    assert (node["uptime"], node["heartbeat_at"], node["online"]) == (3600.0, 1500.0, False)


def test_put_if_changed_writes_only_changes_and_ignores_its_stamp(store):
    assert store.put_if_changed("status/x", {"a": 1}, stamp={"at": 1.0}) is True
    assert store.put_if_changed("status/x", {"a": 1}, stamp={"at": 2.0}) is False
    assert store.get("status/x") == {"a": 1, "at": 1.0}
    store.delete("status/x")                                     # a delete makes the next call write
    assert store.put_if_changed("status/x", {"a": 1}) is True
    assert store.put_if_changed("status/x", {"a": 2}) is True


def test_events_are_pruned_by_age_and_count(store):
    for number in range(12):
        events.emit(store, severity="info", node="n1", source="t", message=f"e{number}",
                    clock=lambda number=number: 1000.0 + number * 86400)
    now = 1000.0 + 11 * 86400 + 1
    assert events.prune(store, now=now, keep_days=5.5, keep_count=100) == 6   # days 0..5 are too old
    assert events.prune(store, now=now, keep_days=100, keep_count=4) == 2
    assert [e["message"] for e in events.recent(store, limit=50)] == ["e11", "e10", "e9", "e8"]


def test_one_keeper_prunes_per_round(store):
    store.put("nodes/n1", {"name": "n1"})
    service = JobService(store)
    for number in range(5):
        events.emit(store, severity="info", node="n1", source="t", message=f"e{number}")
    settings = HistorySettings(event_keep_count=2, interval=30)
    first = HistoryKeeper(store, "n1", settings).run_once()
    second = HistoryKeeper(store, "n2", settings).run_once()
    assert (first.pruned, first.events_deleted) == (True, 3)
    assert second.pruned is False
    assert first.db_size > 0 and first.warning is None
    assert service.list() == []


def test_a_member_mostly_free_pages_is_defragmented(store):
    # ~80 MiB of values, then deleted and compacted: the file keeps its size until defragmented.
    blob = "x" * (1 << 20)
    for number in range(80):
        store.put(f"big/{number}", blob)
    store.delete_prefix("big/")
    revision = store.revision()
    store._post("/kv/compaction", {"revision": str(revision), "physical": True}, idempotent=True)
    deadline = time.monotonic() + 10        # the backend frees the pages at its next commit
    while not etcd_settings.needs_defragment((before := store.member_status(0)).db_size, before.db_size_in_use):
        assert time.monotonic() < deadline, before
        store.put("tick", time.time())
        time.sleep(0.2)
    report = HistoryKeeper(store, "n1", HistorySettings(interval=30)).run_once()
    assert report.defragmented is True
    assert report.db_size < before.db_size - 64 * 1024 ** 2
    assert store.get(f"big/0") is None and store.get_entry("etcd-defrag") is None


def test_the_quota_warning_is_raised_once_before_the_quota(store):
    keeper = HistoryKeeper(store, "n1", HistorySettings(interval=30), quota=1)   # any database is "full"
    assert keeper.run_once().warning.startswith("the cluster store's database is")
    keeper.run_once()
    warnings = [e for e in events.recent(store, limit=10) if e["source"] == "store"]
    assert len(warnings) == 1 and warnings[0]["severity"] == "warning"
    assert etcd_settings.quota_warning(100, 1000) is None
    assert etcd_settings.quota_warning(850, 1000) is not None


def test_the_console_and_api_warn_before_the_store_quota(store, etcd, tmp_path, monkeypatch):
    from cairn import config as config_mod
    from cairn.web.app import create_app
    from cairn.web.auth import Auth
    cfg = config_mod.Config(node_name="n1", etcd_endpoints=tuple(etcd.endpoints), state_dir=tmp_path,
                            store_root=store.root)
    app = create_app(cfg, store)
    auth = Auth(store)
    auth.ensure_admin(tmp_path / "admin-password")
    token = auth.issue_token("admin")["token"]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    health = client.get("/api/v1/store", headers=headers, base_url="https://localhost").get_json()
    assert health["warning"] is None and 0 < health["db_size"] < health["quota"] == etcd_settings.QUOTA_BYTES
    monkeypatch.setattr(etcd_settings, "QUOTA_BYTES", health["db_size"])      # as if the store were full
    health = client.get("/api/v1/store", headers=headers, base_url="https://localhost").get_json()
    assert health["warning"].startswith("the cluster store's database is")
    with client.session_transaction() as session:
        session["user"], session["csrf"] = "admin", "x"
    page = client.get("/", base_url="https://localhost").get_data(as_text=True)
    assert 'id="store-warning"' in page and "of its" in page and "quota" in page
