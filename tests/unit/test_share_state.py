"""Whether a share is served, decided from what the node that owns its pool last published:
served when listed, error when not listed and the last shares pass failed, else pending (pure)."""

from __future__ import annotations

from cairn.shares.service import share_state

OFFICE = {"name": "Office", "pool": "tank", "volume": "office"}
GOOD_PASS = {"ok": True, "actions": 3, "error": None, "at": 1000.0}
FAILED_PASS = {"ok": False, "actions": 0, "error": "write smb.conf: testparm refused it", "at": 1000.0}


def test_a_share_the_node_lists_is_served_by_it():
    assert {"state": "served", "node": "node-a", "error": None} == \
        share_state(OFFICE, "node-a", {"served": ["Office", "Media"]}, GOOD_PASS)


def test_names_are_compared_ignoring_case_as_share_names_are():
    assert "served" == share_state(OFFICE, "node-a", {"served": ["office"]}, GOOD_PASS)["state"]


def test_a_listed_share_stays_served_when_a_later_pass_failed():
    # the list is from the last good pass: the share was served then and smbd still serves it
    assert {"state": "served", "node": "node-a", "error": None} == \
        share_state(OFFICE, "node-a", {"served": ["Office"]}, FAILED_PASS)


def test_a_share_not_listed_after_a_failed_pass_shows_the_error():
    assert {"state": "error", "node": "node-a", "error": "write smb.conf: testparm refused it"} == \
        share_state(OFFICE, "node-a", {"served": ["Media"]}, FAILED_PASS)


def test_a_failed_pass_without_a_message_still_says_which_node_failed():
    assert {"state": "error", "node": "node-a", "error": "the last shares pass on node-a failed"} == \
        share_state(OFFICE, "node-a", None, {"ok": False})


def test_a_share_not_listed_yet_after_a_good_pass_is_pending():
    assert {"state": "pending", "node": "node-a", "error": None} == \
        share_state(OFFICE, "node-a", {"served": []}, GOOD_PASS)


def test_before_the_node_published_anything_the_share_is_pending():
    assert {"state": "pending", "node": "node-a", "error": None} == share_state(OFFICE, "node-a", None, None)


def test_without_a_pool_node_nothing_serves_the_share():
    assert {"state": "pending", "node": None, "error": None} == \
        share_state(OFFICE, None, {"served": ["Office"]}, FAILED_PASS)


def test_a_share_whose_record_the_node_could_not_use_shows_what_is_wrong_with_it():
    published = {"served": ["Media"], "problems": {"shares/office": "path: /etc is outside volume tank/office",
                                                   "share-groups/staff\n": "name: group name must be ..."}}
    failed = {"ok": False, "error": "2 not applied (everything else was): ..."}
    assert {"state": "error", "node": "node-a", "error": "path: /etc is outside volume tank/office"} == \
        share_state(OFFICE, "node-a", published, failed)
    assert "served" == share_state({"name": "Media"}, "node-a", published, failed)["state"]
