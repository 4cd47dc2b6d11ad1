"""Storage through the real stack: cairn-agent and cairn-web processes, a real etcd, and btrfs on
loop devices standing in for disks (`storage.include_loop`). Pools, profiles, expand, replace,
scrub, volumes with quotas, snapshots, rollback, clone, schedules, remount and destroy — for real."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

from cairn.runner import Runner
from cairn.storage import model
from cairn.storage.monitor import StorageMonitor
from cairn.storage.pools import Storage
from support import finish_job, storage_stack, wait_until

MiB = 1 << 20


@pytest.fixture(scope="module")
def rig(tmp_path_factory, request):
    with storage_stack(tmp_path_factory.mktemp("storage"), 6, 512,
                       keep_logs=lambda: request.session.testsfailed) as running:
        yield running


def call(session, stack, method, path, **kwargs):
    return session.request(method, stack.url + "/api/v1" + path, **kwargs)


def run_job(session, stack, method, path, timeout=120, **kwargs) -> dict:
    return finish_job(session, stack, method, path, timeout, **kwargs)


def ok(job: dict) -> dict:
    assert job["state"] == "success", f"{job['title']}: {job['state']}: {job.get('error')}"
    return job


def write_error(path: Path, size: int) -> int | None:
    """Write size random bytes to path and fsync; the errno it failed with, or None."""
    try:
        with open(path, "wb") as fh:
            for _ in range(size // MiB):
                fh.write(os.urandom(MiB))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as error:
        return error.errno
    return None


def disks_of(session, stack) -> dict[str, dict]:
    reply = call(session, stack, "GET", "/disks", params={"node": stack.node})
    return {d["id"]: d for d in reply.json()["disks"]}


@pytest.fixture(scope="module")
def api(rig):
    stack, loops = rig
    return stack, loops, stack.session()


def test_loop_disks_are_listed_free_by_id(api):
    stack, loops, session = api
    found = disks_of(session, stack)
    for disk_id in loops.ids():
        assert found[disk_id]["usage"]["kind"] == "free", found[disk_id]
        assert found[disk_id]["bus"] == "loop" and found[disk_id]["size"] == 512 * MiB


def test_bad_pool_requests_are_refused_naming_the_problem(api):
    stack, loops, session = api
    a, b = loops.ids()[:2]
    node = stack.node

    def create(**body):
        return call(session, stack, "POST", "/pools", json={"name": "bad", "node": node, **body})

    reply = create(disks=["NO-SUCH-DISK"], profile="single")
    assert reply.status_code == 400 and "no disk NO-SUCH-DISK on node" in reply.json()["error"]["message"]
    reply = create(disks=[a], profile="raid1")
    assert reply.status_code == 400
    assert reply.json()["error"]["fields"]["disks"] == "profile raid1 needs at least 2 disks, 1 given"
    reply = create(disks=[a, b], profile="raid5")
    assert reply.status_code == 400 and "write hole" in reply.json()["error"]["fields"]["profile"]
    reply = create(disks=[a, b], profile="raid1", node="nowhere")
    assert reply.status_code == 404
    reply = create(disks=[a, a], profile="raid1")
    assert reply.status_code == 400 and "more than once" in reply.json()["error"]["message"]
    # (the system disk → 409 is shown in the appliance: this host's root disk has no serial)
    assert call(session, stack, "GET", "/pools").json()["pools"] == [], "nothing was created"


def test_raid1_pool_is_created_mounted_and_observed(api):
    stack, loops, session = api
    a, b = loops.ids()[:2]
    job = ok(run_job(session, stack, "POST", "/pools", json={"name": "tank", "node": stack.node, "disks": [a, b],
                                                             "profile": "raid1", "compression": "zstd"}))
    path = job["result"]["path"]
    assert path == str(Path(stack.cfg.storage.pools_root) / "tank")
    mounts = {line.split()[1]: line.split()[3] for line in Path("/proc/self/mounts").read_text().splitlines()}
    assert "compress=zstd" in mounts[path]
    pool = call(session, stack, "GET", "/pools/tank").json()
    assert (pool["state"], pool["data_profile"], pool["metadata_profile"]) == ("online", "raid1", "raid1")
    assert pool["status"]["health"] == "online" and pool["status"]["mounted"] is True
    assert pool["status"]["usage"]["data_profile"] == "raid1"
    assert sorted(d["disk"] for d in pool["status"]["devices"]) == sorted([a, b])
    found = disks_of(session, stack)
    assert found[a]["usage"] == {"kind": "pool", "detail": "pool tank"}
    reply = call(session, stack, "POST", "/pools", json={"name": "tank", "node": stack.node,
                                                          "disks": loops.ids()[2:3], "profile": "single"})
    assert reply.status_code == 409 and "already exists" in reply.json()["error"]["message"]
    reply = call(session, stack, "POST", "/pools", json={"name": "other", "node": stack.node, "disks": [a],
                                                          "profile": "single"})
    assert reply.status_code == 409 and "pool tank" in reply.json()["error"]["message"]


def test_two_jobs_on_one_disk_never_interleave(api):
    stack, loops, session = api
    c, d, e = loops.ids()[2:5]
    jobs = stack.session()
    from cairn.jobs.service import JobService
    service = JobService(stack.store())
    # Straight to the job queue (the API would refuse the second at once once the first is done).
    first = service.submit("pool.create", stack.node, {"name": "first", "disks": [c, d], "profile": "raid1"})
    second = service.submit("pool.create", stack.node, {"name": "second", "disks": [d, e], "profile": "raid1"})
    assert f"disk:{stack.node}/{d}" in first.locks and f"disk:{stack.node}/{d}" in second.locks
    done = {}
    for job in (first, second):
        done[job.id] = wait_until(lambda j=job: (x := call(jobs, stack, "GET", f"/jobs/{j.id}").json())["state"]
                                  not in ("queued", "running") and x, 120, "both jobs to end")
    one, two = done[first.id], done[second.id]
    assert one["state"] == "success"
    assert two["state"] == "failed" and f"disk {d}" in two["error"] and "not free" in two["error"]
    assert two["started_at"] >= one["finished_at"], "the second ran only after the first released the disk"
    ok(run_job(session, stack, "DELETE", "/pools/first", params={"confirm": "first"}))


def test_volume_quota_snapshot_rollback_and_clone(api):
    stack, loops, session = api
    assert call(session, stack, "GET", "/pools/tank/volumes/nope/snapshots").status_code == 404
    reply = call(session, stack, "POST", "/pools/tank/volumes/nope/snapshots", json={})
    assert reply.status_code == 404 and "no volume 'nope'" in reply.json()["error"]["message"]
    assert call(session, stack, "POST", "/pools/tank/volumes", json={"name": "vms"}).status_code == 400
    ok(run_job(session, stack, "POST", "/pools/tank/volumes", json={"name": "media", "quota_bytes": 64 * MiB}))
    volume = Path(call(session, stack, "GET", "/pools/tank/volumes/media").json()["path"])
    (volume / "a.bin").write_bytes(os.urandom(40 * MiB))
    os.sync()
    assert write_error(volume / "b.bin", 40 * MiB) == errno.EDQUOT
    (volume / "b.bin").unlink()
    (volume / "note.txt").write_text("version 1\n")
    ok(run_job(session, stack, "POST", "/pools/tank/volumes/media/snapshots", json={"name": "v1"}))
    (volume / "note.txt").write_text("version 2\n")
    (volume / "a.bin").unlink()
    os.sync()
    # exclusive vs shared: the snapshot alone holds a.bin now
    ok(run_job(session, stack, "POST", "/pools/tank/volumes/media/snapshots", json={"name": "v2"}))
    snaps = {s["name"]: s for s in call(session, stack, "GET", "/pools/tank/volumes/media/snapshots").json()["snapshots"]}
    assert set(snaps) == {"v1", "v2"}
    assert snaps["v1"]["referenced"] >= 40 * MiB and snaps["v1"]["exclusive"] >= 39 * MiB
    assert snaps["v2"]["exclusive"] < MiB, "v2 shares everything with the volume"
    reply = call(session, stack, "POST", "/pools/tank/volumes/media/snapshots/v1/rollback", json={"confirm": "x"})
    assert reply.status_code == 400 and "confirm" in reply.json()["error"]["fields"]
    ok(run_job(session, stack, "POST", "/pools/tank/volumes/media/snapshots/v1/rollback", json={"confirm": "media"}))
    assert (volume / "note.txt").read_text() == "version 1\n" and (volume / "a.bin").stat().st_size == 40 * MiB
    assert write_error(volume / "c.bin", 40 * MiB) == errno.EDQUOT, "the quota came back with the new subvolume"
    (volume / "c.bin").unlink()
    job = ok(run_job(session, stack, "POST", "/pools/tank/volumes/media/snapshots/v2/clone", json={"name": "media-v2"}))
    clone = Path(job["result"]["path"])
    assert (clone / "note.txt").read_text() == "version 2\n" and not (clone / "a.bin").exists()
    (clone / "new.txt").write_text("clones are writable")
    ok(run_job(session, stack, "DELETE", "/pools/tank/volumes/media/snapshots/v2"))
    names = [s["name"] for s in call(session, stack, "GET", "/pools/tank/volumes/media/snapshots").json()["snapshots"]]
    assert names == ["v1"]


def test_schedule_takes_and_prunes_snapshots(api):
    stack, loops, session = api
    ok(run_job(session, stack, "POST", "/pools/tank/volumes", json={"name": "docs"}))
    bad = call(session, stack, "PATCH", "/pools/tank/volumes/docs", json={"schedule": {"every": "1m"}})
    assert bad.status_code == 400 and "schedule.every" in bad.json()["error"]["fields"]
    reply = call(session, stack, "PATCH", "/pools/tank/volumes/docs",
                 json={"schedule": {"every": "5m", "keep_last": 2, "keep_daily": 0, "keep_weekly": 0}})
    assert reply.status_code == 200 and reply.json()["volume"]["schedule"]["every"] == "5m"
    # The agent would run the schedule on the real clock: stop it and drive the same code with a
    # clock of our own (real btrfs, real store), 5 minutes a step.
    stack.agent.stop()
    try:
        storage = Storage(Runner(), stack.store(), stack.node, stack.cfg.storage)
        start = 1_800_000_000.0
        taken = [storage.run_schedules(now=start + step * 300) for step in range(4)]
        assert taken[0] == [f"snapshot tank/docs@{model.snapshot_name(start, True)}"]
        assert storage.run_schedules(now=start + 3 * 300 + 60) == [], "not due again within the interval"
        assert taken[3][1:] == [f"pruned tank/docs@{model.snapshot_name(start + 300, True)}"]
        assert storage.snapshot_names("tank", "docs") == [model.snapshot_name(start + s * 300, True) for s in (2, 3)]
        assert call(session, stack, "PATCH", "/pools/tank/volumes/docs", json={"schedule": None}).status_code == 200
    finally:
        stack.restart_agent()


def test_expand_then_replace_then_scrub(api):
    stack, loops, session = api
    a, b, c, d = loops.ids()[:4]
    ok(run_job(session, stack, "POST", "/pools/tank/disks", json={"disks": [c]}, timeout=300))
    pool = call(session, stack, "GET", "/pools/tank").json()
    assert sorted(pool["disks"]) == sorted([a, b, c])
    assert all(dev["allocated"] > 0 for dev in pool["status"]["devices"]), "the balance spread chunks to the new disk"
    reply = call(session, stack, "POST", "/pools/tank/replace", json={"old": "NOT-IN-POOL", "new": d})
    assert reply.status_code == 400
    # A schedule changed while the replace runs survives the job's own write of the disk list
    # (the job changes the current record by compare-and-swap, not a copy it read at its start).
    reply = call(session, stack, "POST", "/pools/tank/replace", json={"old": a, "new": d})
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    wait_until(lambda: call(session, stack, "GET", f"/jobs/{job_id}").json()["state"] != "queued", 60,
               "the replace to start")
    patched = call(session, stack, "PATCH", "/pools/tank", json={"scrub_schedule": "monthly"})
    assert patched.status_code == 200, patched.text
    assert call(session, stack, "GET", f"/jobs/{job_id}").json()["state"] == "running", \
        "the replace ended before the schedule changed: the race was not run"
    ok(wait_until(lambda: (j := call(session, stack, "GET", f"/jobs/{job_id}").json())["state"]
                  not in ("queued", "running") and j, 300, "the replace to end"))
    pool = call(session, stack, "GET", "/pools/tank").json()
    assert sorted(pool["disks"]) == sorted([b, c, d])
    assert pool["scrub_schedule"] == "monthly"
    assert call(session, stack, "PATCH", "/pools/tank", json={"scrub_schedule": None}).status_code == 200
    assert disks_of(session, stack)[a]["usage"]["kind"] != "pool"
    job = ok(run_job(session, stack, "POST", "/pools/tank/scrub", timeout=300))
    assert job["result"]["state"] == "finished" and job["result"]["bytes_scrubbed"] > 40 * MiB
    assert job["result"]["corrected_errors"] == 0 and job["result"]["uncorrectable_errors"] == 0


def test_scheduled_scrub_and_balance_are_submitted_once_per_period(api):
    stack, loops, session = api
    assert call(session, stack, "PATCH", "/pools/tank", json={"scrub_schedule": "daily"}).status_code == 400
    reply = call(session, stack, "PATCH", "/pools/tank", json={"scrub_schedule": "weekly", "balance_schedule": "monthly"})
    assert reply.status_code == 200 and reply.json()["scrub_schedule"] == "weekly"
    monitor = StorageMonitor(Runner(), stack.store(), stack.node, stack.cfg.storage)
    now = 1_800_000_000.0
    (job_id, balance_id) = monitor.schedule_maintenance(now)
    assert monitor.schedule_maintenance(now + 6 * 86400) == [], "not again within the week"
    balance = wait_until(lambda: (j := call(session, stack, "GET", f"/jobs/{balance_id}").json())["state"]
                         not in ("queued", "running") and j, 120, "the scheduled balance to end")
    assert ok(balance)["kind"] == "pool.balance"
    job = wait_until(lambda: (j := call(session, stack, "GET", f"/jobs/{job_id}").json())["state"]
                     not in ("queued", "running") and j, 120, "the scheduled scrub to end")
    assert ok(job)["kind"] == "pool.scrub"
    (again,) = monitor.schedule_maintenance(now + 7 * 86400)      # the scrub again; the balance is monthly
    call(session, stack, "PATCH", "/pools/tank", json={"scrub_schedule": None, "balance_schedule": None})
    wait_until(lambda: call(session, stack, "GET", f"/jobs/{again}").json()["state"] not in ("queued", "running"),
               120, "the second scheduled scrub to end")


def test_cairnctl_storage_commands(api, tmp_path):
    stack, loops, session = api
    env = {"XDG_CONFIG_HOME": str(tmp_path)}

    def ctl(*args, check=True, input=None):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], env=env, check=check,
                            input=input, timeout=300)

    ctl("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    shown = ctl("pool", "show", "tank").stdout
    assert shown.startswith("pool tank on node-a: online") and "data raid1" in shown
    created = ctl("--json", "volume", "create", "tank", "photos", "--quota", "200M", "--every", "daily",
                  "--keep-last", "3", "--wait")
    assert json.loads(created.stdout)["state"] == "success"
    rows = ctl("volume", "list", "tank").stdout.splitlines()
    assert rows[0].split()[:3] == ["NAME", "QUOTA", "REFERENCED"]
    photos = next(r for r in rows if r.startswith("photos"))
    assert "200.0 MiB" in photos and "daily" in photos
    assert json.loads(ctl("--json", "snapshot", "create", "tank", "photos", "--name", "one", "--wait").stdout)["state"] \
        == "success"
    assert [s["name"] for s in json.loads(ctl("--json", "snapshot", "list", "tank", "photos").stdout)] == ["one"]
    free = [d for d in loops.ids() if d not in call(session, stack, "GET", "/pools/tank").json()["disks"]]
    refused = ctl("pool", "create", "solo", "--node", stack.node, "--disk", free[0], "--profile", "raid1",
                  check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error (400): disks: profile raid1 needs at least 2 disks, 1 given"
    listed = ctl("disk", "list", "--node", stack.node, "--free").stdout
    assert free[0] in listed and "loop" in listed


def test_pool_is_mounted_again_when_the_agent_starts(api):
    stack, loops, session = api
    path = str(Path(stack.cfg.storage.pools_root) / "tank")
    stack.agent.stop()
    Runner().run(["umount", path])
    stack.restart_agent()
    wait_until(lambda: any(line.split()[1] == path for line in Path("/proc/self/mounts").read_text().splitlines()),
               60, "the agent to mount the pool again")
    assert (Path(path) / "media" / "note.txt").read_text() == "version 1\n"


def test_destroy_needs_confirmation_and_frees_the_disks(api):
    stack, loops, session = api
    reply = call(session, stack, "DELETE", "/pools/tank")
    assert reply.status_code == 400 and "confirm='tank'" in reply.json()["error"]["message"]
    members = call(session, stack, "GET", "/pools/tank").json()["disks"]
    ok(run_job(session, stack, "DELETE", "/pools/tank", params={"confirm": "tank"}))
    assert call(session, stack, "GET", "/pools/tank").status_code == 404
    found = disks_of(session, stack)
    assert {found[m]["usage"]["kind"] for m in members} == {"free"}
    assert call(session, stack, "GET", "/pools/tank/volumes").status_code == 404
