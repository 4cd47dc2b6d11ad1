"""Storage decisions: pool layouts, names, schedules and retention (pure, no disks)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cairn.errors import ValidationError
from cairn.storage import model


def layout(profile, disks, metadata=None, on_array=False):
    problems: dict[str, str] = {}
    got = model.check_pool_layout(profile, metadata, disks, on_array, problems)
    return got, problems


def test_profiles_need_enough_disks_and_say_how_many():
    assert layout("raid1", 2) == (("raid1", "raid1"), {})
    assert layout("single", 1) == (("single", "dup"), {})
    assert layout("raid1c3", 3) == (("raid1c3", "raid1c3"), {})
    assert layout("raid10", 3)[1] == {"disks": "profile raid10 needs at least 4 disks, 3 given"}
    assert layout("raid1", 1)[1]["disks"] == "profile raid1 needs at least 2 disks, 1 given"


def test_raid5_and_raid6_are_refused_with_the_reason_and_the_alternative():
    for profile in ("raid5", "raid6"):
        problems = layout(profile, 4)[1]
        assert "write hole" in problems["profile"] and "md " in problems["profile"]


def test_unknown_profile_and_impossible_metadata():
    assert "must be one of single, raid1, raid1c3, raid10" == layout("mirror", 2)[1]["profile"]
    assert layout("single", 1, "raid1")[1] == {"metadata_profile": "metadata profile raid1 needs more than 1 disk(s)"}


def test_pool_on_an_array_is_single():
    assert layout(None, 1, on_array=True) == (("single", "dup"), {})
    assert "single profile" in layout("raid1", 1, on_array=True)[1]["profile"]


def test_names():
    problems: dict[str, str] = {}
    assert model.check_volume_name("media", problems) == "media" and not problems
    for bad in ("", "Media", "-x", "a" * 33, "a/b", None, "vms"):
        problems = {}
        model.check_volume_name(bad, problems)
        assert "name" in problems, bad
    problems = {}
    assert model.check_snapshot_name("before-upgrade.1", problems) == "before-upgrade.1" and not problems
    model.check_snapshot_name("auto-20260101T000000Z", problems)
    assert "auto-" in problems["name"]


def test_quota_and_schedule_validation_reports_every_field():
    problems: dict[str, str] = {}
    assert model.check_quota(None, problems) is None
    model.check_quota(100, problems)
    assert "at least 1 MiB" in problems["quota_bytes"]
    problems = {}
    model.check_schedule({"every": "2m", "keep_last": -1, "colour": 1}, problems)
    assert set(problems) == {"schedule.every", "schedule.keep_last", "schedule.colour"}
    problems = {}
    model.check_schedule({"keep_last": 0, "keep_daily": 0, "keep_weekly": 0}, problems)
    assert "keep no snapshots" in problems["schedule"]
    problems = {}
    assert model.check_schedule({"every": "15m", "keep_last": 3}, problems) == model.Schedule("15m", 3, 0, 7, 4)
    with pytest.raises(ValidationError, match="schedule.every"):
        model.raise_problems({"schedule.every": "bad"})


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_snapshot_names_carry_their_time():
    now = ts("2026-11-30T08:15:00")
    assert model.snapshot_name(now, auto=True) == "auto-20261130T081500Z"
    assert model.auto_time("auto-20261130T081500Z") == now
    assert model.auto_time("manual-20261130T081500Z") is None
    assert model.snapshot_name(now, auto=False) == "manual-20261130T081500Z"


def test_due_after_one_interval():
    schedule = model.Schedule(every="hourly")
    now = ts("2026-11-30T08:00:00")
    assert model.snapshot_due(schedule, [], now)
    assert not model.snapshot_due(schedule, [now - 1800], now)
    assert model.snapshot_due(schedule, [now - 3600], now)


def test_retention_keeps_last_n_plus_newest_per_hour_day_week():
    # one snapshot every 6 hours for 30 days
    start = ts("2026-11-01T00:00:00")
    snaps = {model.snapshot_name(start + i * 6 * 3600, True): start + i * 6 * 3600 for i in range(120)}
    schedule = model.Schedule(every="6m", keep_last=3, keep_hourly=0, keep_daily=7, keep_weekly=4)
    doomed = model.retention(schedule, snaps)
    kept = sorted(set(snaps) - doomed)
    newest_first = sorted(snaps, key=snaps.get, reverse=True)
    assert set(newest_first[:3]) <= set(kept)
    days = {name[5:13] for name in kept}
    assert len([d for d in days if d >= "20261124"]) == 7, "one per day for the last 7 days"
    # ISO weeks 49 (Nov 30), 48, 47, 46: the newest of each; nothing older than week 46
    assert {"auto-20261122T180000Z", "auto-20261115T180000Z"} <= set(kept), "weekly ones reach back"
    assert min(kept) == "auto-20261115T180000Z"
    assert len(kept) <= 3 + 7 + 4


def test_plan_takes_and_prunes_so_the_set_never_grows():
    schedule = model.Schedule(every="hourly", keep_last=2, keep_daily=0, keep_weekly=0)
    now = ts("2026-11-30T12:00:00")
    names = [model.snapshot_name(now - h * 3600, True) for h in (1, 2, 3)] + ["manual-x", "before-upgrade"]
    decision = model.plan_schedule(schedule, names, now)
    assert decision.take is True
    assert decision.delete == (model.snapshot_name(now - 3 * 3600, True), model.snapshot_name(now - 2 * 3600, True))
    assert model.plan_schedule(schedule, names, now - 3600 + 60).take is False, "manual snapshots never count"


def test_scrub_schedule_periods():
    now = ts("2026-11-30T00:00:00")
    assert model.scrub_due("weekly", None, now)
    assert not model.scrub_due("weekly", now - 6 * 86400, now)
    assert model.scrub_due("weekly", now - 7 * 86400, now)
    assert not model.scrub_due("monthly", now - 29 * 86400, now)
    assert not model.scrub_due(None, None, now)
