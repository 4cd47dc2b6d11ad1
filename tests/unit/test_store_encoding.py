"""Transactions are built as etcd JSON by a pure function; prefix ranges are computed right."""

import base64
import json

from cairn.cluster.store import Delete, Put, _prefix_end, absent, encode_txn, held_by, unchanged


def b64(text):
    return base64.b64encode(text.encode()).decode()


def test_prefix_end_is_the_next_key_after_every_key_with_the_prefix():
    assert _prefix_end("/cairn/jobs/") == "/cairn/jobs0"
    assert "/cairn/jobs/zzz" < _prefix_end("/cairn/jobs/")


def test_create_if_absent_and_cas_encode_as_etcd_expects():
    body = encode_txn("/cairn", [absent("locks/a"), unchanged("jobs/1", 42)],
                      [Put("locks/a", {"job": "1"}, lease=7), Delete("jobs/", prefix=True)])
    assert body == {
        "compare": [
            {"key": b64("/cairn/locks/a"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"},
            {"key": b64("/cairn/jobs/1"), "target": "MOD", "result": "EQUAL", "mod_revision": "42"},
        ],
        "success": [
            {"request_put": {"key": b64("/cairn/locks/a"), "value": b64(json.dumps({"job": "1"})),
                             "lease": "7"}},
            {"request_delete_range": {"key": b64("/cairn/jobs/"), "range_end": b64("/cairn/jobs0")}},
        ],
        "failure": [],
    }


def test_a_fence_compares_the_lease_a_key_is_bound_to():
    body = encode_txn("/cairn", [held_by("node-alive/n1", 0x1f)], [Put("jobs/1", {})])
    assert body["compare"] == [{"key": b64("/cairn/node-alive/n1"), "target": "LEASE", "result": "EQUAL",
                                "lease": "31"}]
