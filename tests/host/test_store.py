"""The store against a real etcd: JSON values, CAS, leases, watch, schema, and a clear 503-class
error when etcd cannot be reached."""

import threading
import time

import pytest

from cairn.cluster import store as store_mod
from cairn.cluster.store import Put, Store, absent
from cairn.devstack import free_port
from cairn.errors import CairnError, Unavailable


def test_put_get_list_delete(store):
    store.put("a/1", {"n": 1})
    store.put("a/2", {"n": 2})
    store.put("b/1", {"n": 3})
    assert store.get("a/1") == {"n": 1}
    assert [(e.key, e.value) for e in store.list("a/")] == [("a/1", {"n": 1}), ("a/2", {"n": 2})]
    assert [e.key for e in store.list("a/", descending=True, limit=1)] == ["a/2"]
    assert store.count("a/") == 2
    assert store.delete("a/1") is True
    assert store.get("a/1", "gone") == "gone"
    assert store.delete_prefix("a/") == 1


def test_keys_live_under_the_root(store, etcd):
    store.put("x", 1)
    other = Store(etcd.endpoints, store.root + "-other")
    assert other.get("x") is None
    assert store.full_key("x") == store.root + "/x"


def test_create_only_if_absent(store):
    assert store.create("k", "first") is True
    assert store.create("k", "second") is False
    assert store.get("k") == "first"


def test_compare_and_swap_detects_a_concurrent_writer(store):
    store.put("k", {"v": 1})
    seen = store.get_entry("k")
    store.put("k", {"v": 2})                       # someone else writes meanwhile
    assert store.cas("k", {"v": 3}, seen.mod_revision) is False
    assert store.get("k") == {"v": 2}
    fresh = store.get_entry("k")
    assert store.cas("k", {"v": 3}, fresh.mod_revision) is True
    assert store.get("k") == {"v": 3}


def test_update_applies_its_change_to_a_value_written_meanwhile(store):
    store.put("pools/tank", {"disks": ["a", "b"], "scrub_schedule": None})
    calls = []

    def replace_disk(record):
        calls.append(dict(record))
        if len(calls) == 1:      # someone changes the schedule between our read and our write
            store.put("pools/tank", {**record, "scrub_schedule": "weekly"})
        return {**record, "disks": [d for d in record["disks"] if d != "a"] + ["c"]}

    entry = store.update("pools/tank", replace_disk)
    assert store.get("pools/tank") == entry.value == {"disks": ["b", "c"], "scrub_schedule": "weekly"}
    assert len(calls) == 2, "the change must run again on the fresh value"
    before = store.get_entry("pools/tank").mod_revision
    store.update("pools/tank", lambda record: record)
    assert store.get_entry("pools/tank").mod_revision == before, "no change, no write"
    with pytest.raises(store_mod.NotFound):
        store.update("pools/none", lambda record: record)


def test_get_many_and_paged_listings(store):
    for number in range(5):
        store.put(f"p/{number}", number)
    assert [e and e.value for e in store.get_many(["p/1", "p/9", "p/4"])] == [1, None, 4]
    assert [e.key for e in store.list("p/", limit=2, after="p/1")] == ["p/2", "p/3"]
    assert [e.key for e in store.list("p/", limit=2, descending=True, after="p/3")] == ["p/2", "p/1"]
    assert [e.value for e in store.list("p/", keys_only=True)] == [None] * 5
    assert store.delete_range("p/1", "p/3") == 2
    assert [e.key for e in store.list("p/")] == ["p/0", "p/3", "p/4"]


def test_multi_key_transaction_is_all_or_nothing(store):
    store.put("locks/b", "held")
    assert store.txn([absent("locks/a"), absent("locks/b")], [Put("locks/a", 1), Put("locks/b", 1)]) is False
    assert store.get("locks/a") is None
    assert store.get("locks/b") == "held"


def test_key_bound_to_a_lease_disappears_when_it_expires(store):
    lease = store.grant_lease(2)
    store.put("alive", True, lease=lease)
    assert store.keepalive(lease) > 0
    deadline = time.monotonic() + 10
    while store.get("alive") is not None:
        assert time.monotonic() < deadline, "leased key outlived its lease"
        time.sleep(0.2)
    assert store.keepalive(lease) == -1


def test_revoking_a_lease_deletes_its_keys_at_once(store):
    lease = store.grant_lease(60)
    store.put("k", 1, lease=lease)
    store.revoke_lease(lease)
    assert store.get("k") is None


def test_watch_sees_puts_and_deletes_in_order(store):
    start = store.revision() + 1
    stop = threading.Event()
    seen = []

    def follow():
        for event in store.watch("w/", start, idle_timeout=0.5, stop=stop):
            if event is not None:
                seen.append((event.kind, event.key, event.value))
                if len(seen) == 3:
                    return

    thread = threading.Thread(target=follow)
    thread.start()
    store.put("w/a", 1)
    store.put("other", 1)
    store.put("w/a", 2)
    store.delete("w/a")
    thread.join(10)
    stop.set()
    assert seen == [("put", "w/a", 1), ("put", "w/a", 2), ("delete", "w/a", None)]


def test_watch_yields_none_when_quiet(store):
    events = store.watch("quiet/", store.revision() + 1, idle_timeout=0.3)
    assert next(events) is None


def test_schema_is_created_once_and_newer_schemas_are_refused(store):
    assert store.ensure_schema() == store_mod.SCHEMA_VERSION
    assert store.ensure_schema() == store_mod.SCHEMA_VERSION
    store.put("schema", {"version": store_mod.SCHEMA_VERSION + 1})
    with pytest.raises(CairnError, match="newer than this software"):
        store.ensure_schema()


def test_unreachable_etcd_raises_unavailable_naming_the_endpoint():
    port = free_port()
    dead = Store([f"http://127.0.0.1:{port}"], "/t", timeout=1)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        dead.get("x")
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in caught.value.message
    assert "unreachable" in caught.value.message


def test_failover_to_the_next_endpoint(store, etcd):
    dead = f"http://127.0.0.1:{free_port()}"
    store.put("k", "v")
    both = Store([dead] + etcd.endpoints, store.root, timeout=1)
    assert both.get("k") == "v"


def test_a_watch_from_a_compacted_revision_says_so_then_goes_on(store):
    start = store.revision() + 1
    store.put("gone/a", 1)
    store.put("gone/b", 2)
    compacted_at = store.revision()
    store._post("/kv/compaction", {"revision": str(compacted_at)}, idempotent=True)
    store.put("gone/c", 3)
    stop = threading.Event()
    seen = []
    for event in store.watch("gone/", start, idle_timeout=0.5, stop=stop):
        if event is None:
            break
        seen.append((event.kind, event.key))
        if event.key == "gone/c":
            break
    assert seen[0] == ("compacted", "")
    assert seen[-1] == ("put", "gone/c") and ("put", "gone/a") not in seen
