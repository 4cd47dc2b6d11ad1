"""smb.conf generation: golden files compared byte for byte, per-user access from conflicting
grants, previous versions on a volume's subdirectory, texts smb.conf cannot carry, and (where
Samba's testparm is installed) that Samba itself reads the golden files without complaint.

Golden files live in tests/fixtures/shares/golden/. To change one, run the tests with
CAIRN_UPDATE_GOLDEN=1: the test rewrites the file and still fails once, so the new output is
reviewed (git diff) before anyone runs the suite green again."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from cairn.runner import Runner
from cairn.shares import model, smbconf

GOLDEN = Path(__file__).resolve().parent.parent / "fixtures" / "shares" / "golden"
TESTPARM = Path("/usr/bin/testparm")
SMB_GOLDEN = ("smb-basic.conf", "smb-no-shares.conf")

GROUPS = {name: model.Group(name, gid) for gid, name in enumerate(("editors", "interns", "managers"), 10000)}
USERS = {user.name: user for user in (
    model.User("alice", 10000, "Alice", ("editors", "interns")),
    model.User("bob", 10001, "Bob", ("editors",)),
    model.User("carol", 10002, "Carol", ("interns",)),
    model.User("dave", 10003, "Dave", ("editors",), disabled=True),
    model.User("erin", 10004, "Erin"),
    model.User("frank", 10005, "Frank", ("editors", "ghosts")),      # "ghosts" no longer exists
)}


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CAIRN_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode())
        pytest.fail(f"rewrote {path}: review the diff, then run again without CAIRN_UPDATE_GOLDEN")
    assert actual == path.read_bytes().decode("utf-8")


def share(**data) -> model.Share:
    """A share through the same validation the API uses."""
    return model.check_share(data, set(USERS), set(GROUPS))


def basic_shares() -> list[model.Share]:
    return [
        share(name="Büro Ablage", pool="tank", volume="office", path="/pools/tank/office/Büro Ablage",
              description="Ablage für das Büro – 100% intern",
              smb={"recycle_bin": True, "previous_versions": True},
              permissions=[{"principal": "group:editors", "access": "rw"},
                           {"principal": "group:interns", "access": "none"},
                           {"principal": "user:alice", "access": "rw"},
                           {"principal": "user:erin", "access": "ro"}]),
        share(name="50% Rabatt", pool="tank", volume="media", description="Angebote mit 50% Rabatt",
              smb={"guest_ok": True, "browseable": False},
              permissions=[{"principal": "group:managers", "access": "ro"}]),
        share(name="Homes2", pool="tank", volume="homes", smb={"read_only": True},
              permissions=[{"principal": "group:editors", "access": "rw"},
                           {"principal": "user:carol", "access": "ro"}]),
        share(name="Locked", pool="tank", volume="media", path="/pools/tank/media/locked", smb={}),
        share(name="Projekte", pool="tank", volume="projects", smb={"previous_versions": True},
              permissions=[{"principal": "group:editors", "access": "rw"},
                           {"principal": "group:interns", "access": "ro"}]),
        share(name="vmstore", pool="tank", volume="vmstore", nfs={"clients": [{"match": "10.99.0.0/24"}]}),
    ]


def render(shares, users=USERS) -> str:
    return smbconf.render(shares, users, GROUPS, netbios_name="CAIRN1")


def sections(text: str) -> dict[str, dict[str, str]]:
    """The rendered file read back the way Samba's parser reads it (one level, no continuation)."""
    result: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = result.setdefault(line[1:line.index("]")], {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return result


def test_golden_config_with_every_kind_of_share():
    assert_golden("smb-basic.conf", render(basic_shares()))


def test_golden_config_without_shares_is_the_global_section():
    assert_golden("smb-no-shares.conf", render([]))


def test_output_does_not_depend_on_input_order():
    shares = basic_shares()
    shuffled_users = dict(random.Random(7).sample(sorted(USERS.items()), len(USERS)))
    for seed in range(5):
        random.Random(seed).shuffle(shares)
        assert render(shares, shuffled_users) == render(basic_shares())


def test_global_section_is_smb2_only_without_guests_or_printers():
    options = sections(render([]))["global"]
    assert {key: options[key] for key in ("server min protocol", "map to guest", "restrict anonymous",
                                          "load printers", "disable spoolss", "security")} == {
        "server min protocol": "SMB2_10", "map to guest": "never", "restrict anonymous": "2",
        "load printers": "no", "disable spoolss": "yes", "security": "user"}
    assert "vfs objects" not in options
    assert render([]).startswith("# generated by Cairn, do not edit")


def test_an_own_grant_lets_a_user_in_past_a_denied_group():
    office = sections(render(basic_shares()))["Büro Ablage"]
    # alice: interns (none) but an rw entry of her own; carol: only interns; dave: disabled;
    # frank: editors, plus a group that no longer exists; erin: her own ro.
    assert office["valid users"] == "alice bob erin frank"
    assert office["write list"] == "alice bob frank"
    assert office["read list"] == "erin"
    assert office["invalid users"] == "carol dave"
    assert "@" not in render(basic_shares()), "groups are expanded per user, never passed through"


def test_rw_from_one_group_beats_ro_from_another_and_read_only_drops_the_write_list():
    projects = sections(render(basic_shares()))["Projekte"]
    assert (projects["write list"], projects["read list"]) == ("alice bob frank", "carol")
    homes = sections(render(basic_shares()))["Homes2"]
    assert homes["read only"] == "yes" and homes["valid users"] == "alice bob carol frank"
    assert "write list" not in homes and "read list" not in homes


def test_a_share_nobody_may_use_is_unavailable_not_open():
    locked = sections(render(basic_shares()))["Locked"]
    assert locked["available"] == "no"
    assert "valid users" not in locked, "an empty valid users list would let everyone in"
    assert locked["invalid users"] == "alice bob carol dave erin frank"


def test_guests_may_read_but_never_write():
    sale = sections(render(basic_shares()))["50% Rabatt"]
    assert (sale["guest ok"], sale["valid users"], sale["read list"]) == ("yes", "nobody", "nobody")
    assert "write list" not in sale and sale["browseable"] == "no"


def test_previous_versions_of_a_subdirectory_use_the_volume_root():
    office = sections(render(basic_shares()))["Büro Ablage"]
    assert office["path"] == "/pools/tank/office/Büro Ablage"
    assert {key: value for key, value in office.items() if key.startswith(("shadow:", "vfs"))} == {
        "vfs objects": "shadow_copy2 recycle",
        "shadow:mountpoint": "/pools/tank/office",
        "shadow:basedir": "/pools/tank/office",
        "shadow:snapdir": "/pools/tank/.snapshots/office",
        "shadow:format": "auto-%Y%m%dT%H%M%SZ",
        "shadow:localtime": "no",
        "shadow:sort": "desc",
    }
    assert office["recycle:repository"] == ".recycle/%U"


def test_pools_root_and_snapshot_format_are_followed():
    shares = [model.check_share({"name": "x", "pool": "p", "volume": "v", "path": "/srv/p/v/sub",
                                 "smb": {"previous_versions": True}}, set(), set(), pools_root="/srv/")]
    options = sections(smbconf.render(shares, {}, {}, netbios_name="NAS", snapshot_format="snap-%s",
                                      pools_root="/srv/"))["x"]
    assert (options["shadow:snapdir"], options["shadow:basedir"], options["shadow:format"]) == \
        ("/srv/p/.snapshots/v", "/srv/p/v", "snap-%s")


def test_percent_signs_are_written_as_is_because_samba_has_no_escape():
    text = render(basic_shares())
    assert "[50% Rabatt]" in text and "comment = Angebote mit 50% Rabatt" in text
    assert "%%" not in text, "'%%' would reach clients as two percent signs"


@pytest.mark.parametrize("changes, message", [
    ({"path": "/pools/tank/media/%U"},
     "path '/pools/tank/media/%U' contains '%U', which Samba would replace"),
    ({"description": "two  spaces"}, "description 'two  spaces' must not contain two spaces in a row"),
    ({"name": "line\nbreak"}, "share name 'line\\nbreak' must contain only printable characters"),
    ({"path": "/pools/tank/other"}, "share 'x': /pools/tank/other is outside /pools/tank/media"),
])
def test_texts_smb_conf_cannot_carry_are_refused_even_without_validation(changes, message):
    raw = dict(name="x", pool="tank", volume="media", path="/pools/tank/media", smb=model.SmbOptions())
    raw.update(changes)
    with pytest.raises(ValueError) as caught:
        render([model.Share(**raw)])
    assert str(caught.value).startswith(message)


def test_names_that_differ_only_in_case_and_bad_server_names_are_refused():
    twins = [share(name=name, pool="tank", volume="media", smb={}) for name in ("Media", "MEDIA")]
    with pytest.raises(ValueError, match="shares 'MEDIA' and 'Media' differ only in case"):
        render(twins)
    for netbios, workgroup in (("NAS_1", "WORKGROUP"), ("X" * 16, "WORKGROUP"), ("NAS", "nas"),
                               ("NAS", "a b")):
        with pytest.raises(ValueError):
            smbconf.render([], {}, {}, netbios_name=netbios, workgroup=workgroup)


def test_nfs_only_shares_are_left_out():
    assert "vmstore" not in render(basic_shares())


@pytest.mark.skipif(not TESTPARM.exists(),
                    reason="Samba's testparm is not installed here (Debian package samba-common-bin)")
@pytest.mark.parametrize("name", SMB_GOLDEN)
def test_samba_reads_the_golden_files_without_complaint(name, tmp_path):
    config = tmp_path / "smb.conf"
    config.write_bytes((GOLDEN / name).read_bytes())
    result = Runner().run([str(TESTPARM), "-s", "--suppress-prompt", str(config)], check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Unknown parameter" not in result.stderr and "Ignoring unknown" not in result.stderr, result.stderr
    for section_name in sections(config.read_text()):
        assert f"[{section_name}]" in result.stdout
