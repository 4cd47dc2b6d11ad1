"""md RAID: argv builders, and the parser on `mdadm --detail` output captured in the
appliance (mdadm 4.4, kernel 6.12) through a RAID1 resync, failure, rebuild and hot replace, and a
RAID5 build and reshape."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.errors import CommandFailed
from cairn.storage import raid

FIX = Path(__file__).parent.parent / "fixtures" / "mdadm"


def detail(name: str) -> raid.ArrayDetail:
    return raid.parse_detail((FIX / f"detail-{name}.txt").read_text())


def test_argv_builders():
    assert raid.create_argv("data", "raid5", ["/dev/vdb", "/dev/vdc", "/dev/vdd"]) == [
        "mdadm", "--create", "/dev/md/data", "--run", "--metadata=1.2", "--name=data", "--level=5",
        "--raid-devices=3", "/dev/vdb", "/dev/vdc", "/dev/vdd"]
    assert raid.grow_argv("data", 4) == ["mdadm", "--grow", "/dev/md/data", "--raid-devices=4"]
    assert raid.replace_argv("m", "/dev/a", "/dev/b") == ["mdadm", "/dev/md/m", "--replace", "/dev/a", "--with", "/dev/b"]
    with pytest.raises(ValueError):
        raid.create_argv("x", "raid7", ["/dev/a"])


def test_clean_raid1():
    got = detail("raid1-clean")
    assert (got.level, got.raid_devices, got.active_devices, got.failed_devices) == ("raid1", 2, 2, 0)
    assert (got.name, got.uuid, got.size) == ("cap1", "a203a42f:9d573d85:1e29aa04:626f1d3b", 130048 * 1024)
    assert got.health == "clean" and not got.degraded and got.sync_action is None
    assert [(m.path, m.role, m.active) for m in got.members] == [("/dev/vdd", 0, True), ("/dev/vde", 1, True)]


def test_resyncing_after_create():
    got = detail("raid1-resyncing")
    assert (got.sync_action, got.sync_percent, got.health) == ("resync", 69.0, "resyncing")


def test_failed_member_is_faulty_and_the_array_degraded():
    got = detail("raid1-faulty")
    assert got.health == "degraded" and got.failed_devices == 1
    assert [(m.path, m.role, m.state) for m in got.members] == [
        ("/dev/vdd", 0, "active sync"), (None, 1, "removed"), ("/dev/vde", None, "faulty")]
    assert [m.faulty for m in got.members] == [False, False, True]
    removed = detail("raid1-degraded")
    assert removed.health == "degraded" and [m.path for m in removed.members] == ["/dev/vdd", None]


def test_rebuild_progress_and_hot_replace():
    got = detail("raid1-recovering")
    assert (got.sync_action, got.sync_percent, got.health) == ("recovery", 4.0, "rebuilding")
    assert got.members[1].state == "spare rebuilding"
    hot = detail("raid1-replacing")
    assert hot.sync_action == "recovery" and hot.sync_percent == 6.0
    assert [m.path for m in hot.members] == ["/dev/vdd", "/dev/vde", "/dev/vdf"]
    assert detail("raid1-clean-after-rebuild").health == "clean"


def test_raid5_build_and_reshape():
    build = detail("raid5-resync-or-recovering")
    assert (build.level, build.health, build.sync_percent) == ("raid5", "rebuilding", 9.0)
    assert detail("raid5-clean").health == "clean"
    reshape = detail("raid5-reshaping")
    assert (reshape.sync_action, reshape.sync_percent, reshape.health, reshape.raid_devices) == \
        ("reshape", 7.0, "reshaping", 4)


def test_garbage_is_a_command_failure():
    with pytest.raises(CommandFailed, match="mdadm"):
        raid.parse_detail("mdadm: cannot open /dev/md/x: No such file or directory")


def test_changes_tell_degradation_once_and_recovery():
    clean, faulty, rebuilt = detail("raid1-clean"), detail("raid1-faulty"), detail("raid1-clean-after-rebuild")
    told = raid.changes(clean.to_dict(), faulty)
    assert told == [("critical", "array cap1 is degraded: 1 of 2 disks active (clean, degraded)"),
                    ("critical", "disk /dev/vde of array cap1 has failed")]
    assert raid.changes(faulty.to_dict(), faulty) == []
    assert raid.changes(faulty.to_dict(), rebuilt) == [("info", "array cap1 is clean again")]


def test_level_needs_enough_disks_and_conf_lists_arrays():
    problems: dict[str, str] = {}
    raid.check_create("raid6", 3, problems)
    assert problems == {"disks": "RAID 6 needs at least 4 disks, 3 given"}
    problems = {}
    raid.check_create("raid7", 3, problems)
    assert "must be one of" in problems["level"]
    conf = raid.mdadm_conf([("b", "u2"), ("a", "u1")])
    assert conf.splitlines()[-2:] == ["ARRAY /dev/md/a metadata=1.2 UUID=u1 name=a",
                                      "ARRAY /dev/md/b metadata=1.2 UUID=u2 name=b"]
