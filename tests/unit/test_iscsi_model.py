"""iSCSI targets: names and IQNs, initiators, LUN sizes and numbers, CHAP, changes and LUN growth
checked with every problem at once by field path; the record's exact shape (pure, no system)."""

from __future__ import annotations

import itertools
import json

import pytest

from cairn.errors import Conflict, ValidationError
from cairn.shares import iscsi

DEBIAN = "iqn.1993-08.org.debian:01:abcdef"
WINDOWS = "iqn.1991-05.com.microsoft:desk-01.example.com"
GiB = 1 << 30


def serials():
    """Serials as uuid4().hex would give them, but predictable."""
    counter = itertools.count(1)
    return lambda: f"{next(counter):08x}" * 4


def target_data(**changes):
    data = {"name": "vmstore", "pool": "tank", "volume": "luns", "initiators": [DEBIAN]}
    data.update(changes)
    return data


def make(**changes) -> iscsi.Target:
    return iscsi.check_target(target_data(**changes), "/pools", serials())


def problems_of(data, **kwargs) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        iscsi.check_target(data, "/pools", serials(), **kwargs)
    return caught.value.fields


def problem(field: str, **changes) -> str:
    return problems_of(target_data(**changes))[field]


# --- the record -------------------------------------------------------------------------------
def test_a_new_target_is_the_exact_record_the_node_reads():
    target = make(luns=[{"size": "10G"}], chap={"user": "vmhost", "password": "twelve-chars"})
    serial = f"{1:08x}" * 4
    assert json.loads(json.dumps(target.to_dict())) == {
        "name": "vmstore", "iqn": "iqn.2026-11.invalid.cairn:vmstore", "pool": "tank", "volume": "luns",
        "description": "",
        "luns": [{"lun": 0, "size": 10 * GiB, "serial": serial,
                  "file": f"/pools/tank/luns/.iscsi/vmstore/lun0-{serial[:8]}.img"}],
        "initiators": [DEBIAN],
        "chap": {"user": "vmhost", "password": "twelve-chars"},
    }


def test_records_round_trip_through_json():
    target = make(luns=[{"size": GiB}, {"size": "2G", "lun": 7}], description="VMs",
                  chap={"user": "u", "password": "p" * 16}, initiators=[DEBIAN, WINDOWS])
    assert iscsi.Target.from_dict(json.loads(json.dumps(target.to_dict()))) == target
    assert iscsi.Target.from_dict(json.loads(json.dumps(make().to_dict()))) == make()


def test_lun_files_follow_the_pools_root_the_node_reported():
    target = iscsi.check_target(target_data(luns=[{"size": "1M"}]), "/srv/nas/", serials())
    assert target.luns[0].file == f"/srv/nas/tank/luns/.iscsi/vmstore/lun0-{1:08x}.img"


def test_public_view_never_shows_the_chap_password():
    record = make(chap={"user": "vmhost", "password": "twelve-chars"}).to_dict()
    view = iscsi.public_view(record, {"state": "active"})
    assert view["chap"] == {"user": "vmhost", "password_set": True}
    assert view["status"] == {"state": "active"}
    assert "twelve-chars" not in json.dumps(view)
    assert iscsi.public_view(make().to_dict())["chap"] is None


# --- names and IQNs ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vmstore", "a", "0", "db-01", "9lives", "a" * 63])
def test_target_names_that_are_fine(name):
    assert make(name=name).name == name


@pytest.mark.parametrize("name", ["", "-vm", "vm-", "VM", "vm_store", "vm.store", "a" * 64, None, 5])
def test_target_names_that_are_refused(name):
    assert problem("name", name=name) == ("target name must be 1-63 of a-z, 0-9 and '-', starting with a "
                                          "letter or digit and not ending with '-'")


@pytest.mark.parametrize("name", [
    DEBIAN, WINDOWS, "iqn.1998-01.com.vmware:esx01-4b3c2d1e", "iqn.2001-04.com.example",
    "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309", "iqn.2005-03.org.open-iscsi:3f6d2a1b9c",
    "eui.02004567a425678d", "naa.52004567ba64678d", "naa.62004567ba64678d72004567ba64678d",
])
def test_iscsi_names_that_are_fine(name):
    assert iscsi.iscsi_name_problem(name) is None


@pytest.mark.parametrize("name, expected", [
    ("IQN.1993-08.org.debian:01:abcdef", "iSCSI names are lowercase: did you mean iqn.1993-08.org.debian:01:abcdef?"),
    ("eui.02004567A425678D", "iSCSI names are lowercase: did you mean eui.02004567a425678d?"),
    ("iqn.1993-08.org.debian:01:AB CD", "may contain only a-z, 0-9, '-', '.' and ':' (found ' '); "
                                        "iSCSI names are lowercase, too"),
    ("iqn.1993-08.org.debian:host_1", "may contain only a-z, 0-9, '-', '.' and ':' (found '_')"),
    ("iqn.1993-08.org.debian:é", "may contain only a-z, 0-9, '-', '.' and ':' (found 'é')"),
    ("iqn.93-08.org.debian:x", "after 'iqn.' comes a date, YYYY-MM (a month 01-12), and a '.', then a reversed "
                               "domain name like com.example"),
    ("iqn.1993-13.org.debian:x", "after 'iqn.' comes a date, YYYY-MM (a month 01-12), and a '.', then a reversed "
                                 "domain name like com.example"),
    ("iqn.1993-08.debian:x", "'debian' is not a reversed domain name: after iqn.YYYY-MM. give one like "
                             "com.example (two or more labels), then optionally ':' and an identifier"),
    ("iqn.1993-08.org..debian", "'org..debian' is not a reversed domain name: after iqn.YYYY-MM. give one like "
                                "com.example (two or more labels), then optionally ':' and an identifier"),
    ("iqn.1993-08.org.debian:", "nothing follows the ':'; give an identifier after it or leave the ':' out"),
    ("iqn.1993-08.org.debian:" + "x" * 201, "must be at most 223 bytes (RFC 3720), not 224"),
    ("eui.0200", "eui. must be followed by 16 hex digits (0-9, a-f), not '0200'"),
    ("eui.02004567a425678z", "eui. must be followed by 16 hex digits (0-9, a-f), not '02004567a425678z'"),
    ("naa.5200456", "naa. must be followed by 16 or 32 hex digits (0-9, a-f), not '5200456'"),
    ("debian", "must be " + iscsi.NAME_HINT),
    ("", "must be " + iscsi.NAME_HINT),
    (None, "must be " + iscsi.NAME_HINT),
])
def test_iscsi_names_that_are_refused_say_why(name, expected):
    assert iscsi.iscsi_name_problem(name) == expected


def test_the_iqn_defaults_from_the_name_and_a_given_one_is_kept():
    assert make().iqn == "iqn.2026-11.invalid.cairn:vmstore"
    assert make(iqn="").iqn == "iqn.2026-11.invalid.cairn:vmstore"
    assert make(iqn="iqn.2010-01.org.example:vm").iqn == "iqn.2010-01.org.example:vm"
    assert make(iqn="eui.02004567a425678d").iqn == "eui.02004567a425678d"


def test_a_target_naa_name_must_be_one_lio_takes():
    assert make(iqn="naa.52004567ba64678d").iqn == "naa.52004567ba64678d"
    expected = ("as a target name, naa. must be followed by 16 hex digits starting with 1, 2 or 5 "
                "(LIO takes no other)")
    assert problem("iqn", iqn="naa.62004567ba64678d72004567ba64678d") == expected
    assert problem("iqn", iqn="naa.32004567ba64678d") == expected


# --- initiators -------------------------------------------------------------------------------
def test_a_target_needs_an_initiator():
    for value in (None, [], "iqn.1993-08.org.debian:01:abcdef"):
        assert problem("initiators", initiators=value).startswith("at least one initiator is needed")


def test_every_bad_initiator_is_named_by_its_place():
    assert problems_of(target_data(initiators=[DEBIAN, "nope", DEBIAN, WINDOWS, 7])) == {
        "initiators[1]": "must be " + iscsi.NAME_HINT,
        "initiators[2]": f"{DEBIAN} is listed twice (also initiators[0])",
        "initiators[4]": "must be " + iscsi.NAME_HINT,
    }


# --- sizes and LUN numbers --------------------------------------------------------------------
@pytest.mark.parametrize("given, size", [
    (1 << 20, 1 << 20), ("1M", 1 << 20), ("512M", 512 << 20), ("10G", 10 * GiB), ("10GiB", 10 * GiB),
    ("1.5G", 3 * GiB // 2), ("2t", 2 << 40), ("64T", 64 << 40), ("1048576", 1 << 20),
])
def test_sizes_in_bytes_or_binary_units(given, size):
    assert make(luns=[{"size": given}]).luns[0].size == size


@pytest.mark.parametrize("given, expected", [
    ("10X", "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units), not '10X'"),
    ("-1G", "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units), not '-1G'"),
    (1.5e9, "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units)"),
    (True, "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units)"),
    (None, "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units)"),
    (0, "must be at least 1 MiB (1048576 bytes), not 0"),
    ("512K", "must be at least 1 MiB (1048576 bytes), not 524288"),
    ("65T", "must be at most 64 TiB (70368744177664 bytes), not 71468255805440"),
    (10 ** 10, "must be a whole number of MiB (1048576 bytes): 10000000000 is not; 9537 MiB (10000269312 bytes) "
               "would be"),
    ("1.0000001G", "must be a whole number of MiB (1048576 bytes): 1073741931 is not; 1025 MiB (1074790400 bytes) "
                   "would be"),
])
def test_sizes_that_are_refused_say_why(given, expected):
    assert problem("luns[0].size", luns=[{"size": given}]) == expected


def test_lun_numbers_given_are_kept_and_the_others_get_the_lowest_free_ones():
    target = make(luns=[{"size": "1G", "lun": 1}, {"size": "2G"}, {"size": "3G"}, {"size": "4G", "lun": 3}])
    assert [(lun.lun, lun.size) for lun in target.luns] == [(0, 2 * GiB), (1, GiB), (2, 3 * GiB), (3, 4 * GiB)]
    assert len({lun.serial for lun in target.luns}) == 4


def test_lun_numbers_that_are_refused():
    assert problems_of(target_data(luns=[{"size": "1G", "lun": 0}, {"size": "1G", "lun": 0},
                                         {"size": "1G", "lun": 256}, {"size": "1G", "lun": "1"},
                                         {"size": "1G", "file": "/etc/passwd", "colour": "red"}, "1G"])) == {
        "luns[1].lun": "LUN 0 is listed twice (also luns[0])",
        "luns[2].lun": "LUN number must be a whole number from 0 to 255",
        "luns[3].lun": "LUN number must be a whole number from 0 to 255",
        "luns[4].file": "is set by Cairn when the LUN is made",
        "luns[4].colour": "unknown setting",
        "luns[5]": "must be an object {size[, lun]}",
    }
    assert problem("luns", luns=[{"size": "1M"}] * 257) == "a target has at most 256 LUNs (numbers 0-255), not 257"


# --- CHAP -------------------------------------------------------------------------------------
@pytest.mark.parametrize("chap, field, expected", [
    ({"user": "a b", "password": "p" * 12}, "chap.user", "must be 1-64 printable ASCII characters without spaces"),
    ({"user": "", "password": "p" * 12}, "chap.user", "must be 1-64 printable ASCII characters without spaces"),
    ({"user": "ü", "password": "p" * 12}, "chap.user", "must be 1-64 printable ASCII characters without spaces"),
    ({"user": "u" * 65, "password": "p" * 12}, "chap.user", "must be 1-64 printable ASCII characters without spaces"),
    ({"user": "NULLuser", "password": "p" * 12}, "chap.user", "must not start with 'NULL' (LIO would read it as 'no user')"),
    ({"user": "u", "password": "p" * 11}, "chap.password",
     "must be 12 to 16 characters, not 11 (the Windows iSCSI initiator refuses CHAP secrets of any other length)"),
    ({"user": "u", "password": "p" * 17}, "chap.password",
     "must be 12 to 16 characters, not 17 (the Windows iSCSI initiator refuses CHAP secrets of any other length)"),
    ({"user": "u"}, "chap.password", "must be 12 to 16 characters"),
    ({"user": "u", "password": "pässword-1234"}, "chap.password", "must be printable ASCII characters (found U+00E4)"),
    ({"user": "u", "password": "NULL-password"}, "chap.password",
     "must not start with 'NULL' (LIO would read it as 'no password')"),
    ({"user": "u", "password": "p" * 12, "mutual": True}, "chap.mutual", "unknown setting"),
    ("u:secret", "chap", "must be an object {user, password} or null (no CHAP)"),
])
def test_chap_settings_that_are_refused(chap, field, expected):
    assert problem(field, chap=chap) == expected


def test_chap_passwords_of_12_to_16_printable_characters_are_fine():
    for password in ("p" * 12, "p" * 16, "with spaces ok!", "~!@#$%^&*()_+{}"):
        assert make(chap={"user": "host-01@lab", "password": password}).chap == iscsi.Chap("host-01@lab", password)


# --- every problem at once --------------------------------------------------------------------
def test_every_problem_is_reported_at_once_by_field_path():
    fields = problems_of({"name": "VM", "iqn": "iqn.x", "pool": "Tank", "volume": "vms", "description": "a\tb",
                          "initiators": ["eui.1"], "chap": {"user": "u", "password": "short"},
                          "luns": [{"size": "10X"}], "size": 5})
    assert fields == {
        "name": "target name must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit and not ending with '-'",
        "iqn": "after 'iqn.' comes a date, YYYY-MM (a month 01-12), and a '.', then a reversed domain name like "
               "com.example",
        "pool": "pool name must be 1-32 of a-z, 0-9, '-' and '_', starting with a letter or digit",
        "volume": "'vms' is reserved",
        "description": "must contain only printable characters and plain spaces (found U+0009)",
        "initiators[0]": "eui. must be followed by 16 hex digits (0-9, a-f), not '1'",
        "chap.password": "must be 12 to 16 characters, not 5 (the Windows iSCSI initiator refuses CHAP secrets "
                         "of any other length)",
        "luns[0].size": "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units), not '10X'",
        "size": "unknown setting",
    }
    assert problems_of(["vmstore"]) == {"target": "must be an object"}


# --- changes ----------------------------------------------------------------------------------
def test_changes_touch_description_initiators_and_chap_only():
    target = make(luns=[{"size": "1G"}], chap={"user": "u", "password": "old-password"})
    changed = iscsi.check_changes(target, {"description": "VMs", "initiators": [WINDOWS], "name": "vmstore",
                                           "pool": "tank"})
    assert changed == iscsi.Target("vmstore", target.iqn, "tank", "luns", "VMs", target.luns, (WINDOWS,), target.chap)
    assert iscsi.check_changes(target, {"chap": None}).chap is None
    assert iscsi.check_changes(target, {"chap": {"user": "v"}}).chap == iscsi.Chap("v", "old-password"), \
        "without a password the current one stays (it is never shown, so it cannot be sent back)"
    assert iscsi.check_changes(target, {"chap": {"user": "u", "password": "new-password"}}).chap.password == \
        "new-password"


def test_fixed_settings_are_refused_saying_so():
    target = make(luns=[{"size": "1G"}])
    with pytest.raises(ValidationError) as caught:
        iscsi.check_changes(target, {"name": "other", "iqn": "iqn.2010-01.org.example:x", "pool": "tank2",
                                     "volume": "luns", "luns": [], "colour": "red", "initiators": []})
    assert caught.value.fields == {
        "name": "cannot be changed: a target keeps its name (make a new target to rename)",
        "iqn": "cannot be changed: a target keeps its IQN: initiators know it by it (make a new target for "
               "another IQN)",
        "pool": "cannot be changed: a target's LUN files stay in their volume (make a new target elsewhere)",
        "luns": "cannot be changed: LUNs are added, grown and deleted under /iscsi-targets/<name>/luns",
        "colour": "unknown setting",
        "initiators": caught.value.fields["initiators"],
    }
    assert caught.value.fields["initiators"].startswith("at least one initiator is needed")
    with pytest.raises(ValidationError, match="chap.password: must be 12 to 16 characters"):
        iscsi.check_changes(make(), {"chap": {"user": "new"}})


# --- LUNs added, grown --------------------------------------------------------------------------
def test_a_new_lun_gets_the_lowest_free_number_and_a_new_serial():
    target = make(luns=[{"size": "1G", "lun": 0}, {"size": "1G", "lun": 2}])
    lun = iscsi.check_new_lun(target, {"size": "5G"}, "/pools", lambda: "ab" * 16)
    assert lun == iscsi.Lun(1, 5 * GiB, "ab" * 16, "/pools/tank/luns/.iscsi/vmstore/lun1-abababab.img")
    assert iscsi.check_new_lun(target, {"size": "1G", "lun": 9}, "/pools", serials()).lun == 9


def test_a_taken_lun_number_is_a_conflict_and_bad_input_comes_first():
    target = make(luns=[{"size": "1G", "lun": 0}])
    with pytest.raises(Conflict, match="target vmstore has a LUN 0 already"):
        iscsi.check_new_lun(target, {"size": "1G", "lun": 0}, "/pools", serials())
    with pytest.raises(ValidationError) as caught:
        iscsi.check_new_lun(target, {"size": "1K", "lun": 0, "serial": "x"}, "/pools", serials())
    assert caught.value.fields == {"size": "must be at least 1 MiB (1048576 bytes), not 1024",
                                   "serial": "is set by Cairn when the LUN is made"}
    full = make(luns=[{"size": "1M"}] * 256)
    with pytest.raises(Conflict, match="target vmstore has 256 LUNs, every number from 0 to 255"):
        iscsi.check_new_lun(full, {"size": "1M"}, "/pools", serials())


def test_luns_grow_and_never_shrink():
    lun = make(luns=[{"size": "10G"}]).luns[0]
    assert iscsi.check_grow(lun, {"size": "20G"}) == iscsi.Lun(0, 20 * GiB, lun.serial, lun.file)
    assert iscsi.check_grow(lun, {"size": 10 * GiB}) == lun
    with pytest.raises(ValidationError) as caught:
        iscsi.check_grow(lun, {"size": "5G", "serial": "x"})
    assert caught.value.fields == {
        "size": "5 GiB (5368709120 bytes) is smaller than LUN 0 (10 GiB (10737418240 bytes)): would cut off data; "
                "shrinking is not supported",
        "serial": "cannot be changed: only a LUN's size can",
    }


# --- whole records (import) -------------------------------------------------------------------
def test_a_whole_record_is_checked_and_kept_as_it_is():
    record = json.loads(json.dumps(make(luns=[{"size": "1G"}, {"size": "2G"}],
                                        chap={"user": "u", "password": "p" * 12}).to_dict()))
    assert iscsi.check_target(record, "/pools", whole_record=True).to_dict() == iscsi.Target.from_dict(record).to_dict()


def test_a_whole_record_cannot_point_a_lun_at_another_file():
    record = json.loads(json.dumps(make(luns=[{"size": "1G"}, {"size": "1G"}]).to_dict()))
    serial = record["luns"][0]["serial"]
    record["luns"][0]["file"] = "/etc/shadow"
    record["luns"][1]["serial"] = serial
    record["luns"][1]["extra"] = 1
    assert problems_of(record, whole_record=True) == {
        "luns[0].file": f"must be /pools/tank/luns/.iscsi/vmstore/lun0-{serial[:8]}.img (where the LUN's file lives)",
        "luns[1].serial": "is the serial of luns[0] too",
        "luns[1].extra": "unknown setting",
    }
    record["luns"][1]["serial"] = "ABC"
    assert problems_of(record, whole_record=True)["luns[1].serial"] == "must be 32 lowercase hex digits"
