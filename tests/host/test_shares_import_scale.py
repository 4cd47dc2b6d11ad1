"""A whole shares configuration of a small company imports in one transaction: 500 users, 100
groups and 200 shares (etcd's default of 128 operations per transaction stopped it at ~64 users),
and a document too big for one transaction is refused up front, naming its size."""

import time

import pytest

from cairn.cluster import etcd_settings
from cairn.errors import ValidationError
from cairn.shares import service as share_service
from cairn.shares.service import EXPORT_FORMAT, ShareService
from cairn.storage.model import Pool, Volume

NT_HASH = "8846f7eaee8fb117ad06bdd830b7586c"


def document(users: int, groups: int, shares: int) -> dict:
    return {
        "format": EXPORT_FORMAT,
        "groups": [{"name": f"team{g}", "gid": 20000 + g} for g in range(groups)],
        "users": [{"name": f"user{u}", "uid": 30000 + u, "nt_hash": NT_HASH,
                   "groups": [f"team{u % groups}"]} for u in range(users)],
        "shares": [{"name": f"share{s}", "pool": "tank", "volume": "data", "path": f"/pools/tank/data/s{s}",
                    "smb": {}, "permissions": [{"principal": f"group:team{s % groups}", "access": "rw"},
                                               {"principal": f"user:user{s}", "access": "ro"}]}
                   for s in range(shares)],
    }


@pytest.fixture
def shares(store):
    store.put("pools/tank", Pool("tank", "n1", "single", "single", "none", ("a",), state="online").to_dict())
    store.put("volumes/tank/data", Volume("tank", "data").to_dict())
    return ShareService(store)


def test_500_users_100_groups_and_200_shares_import_in_one_transaction(shares, store):
    started = time.monotonic()
    counts = shares.import_config(document(500, 100, 200))
    took = time.monotonic() - started
    assert counts == {"groups": 100, "users": 500, "shares": 200, "iscsi_targets": 0, "unchanged": 0}
    assert (store.count("share-users/"), store.count("share-groups/"), store.count("shares/")) == (500, 100, 200)
    print(f"imported 500 users, 100 groups, 200 shares in {took:.2f} s")
    # The same document again changes nothing and says so.
    assert shares.import_config(document(500, 100, 200))["unchanged"] == 800


def test_a_document_too_big_for_one_transaction_is_refused_before_anything_is_written(shares, store, monkeypatch):
    monkeypatch.setattr(share_service, "MAX_IMPORT_WRITES", 100)
    with pytest.raises(ValidationError) as caught:
        shares.import_config(document(60, 10, 5))
    assert "import" in caught.value.fields
    assert "75 records (145 writes)" in caught.value.fields["import"]
    assert store.count("share-users/") == 0
    assert share_service.MAX_IMPORT_WRITES <= etcd_settings.MAX_TXN_OPS
