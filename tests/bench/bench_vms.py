"""VM benchmarks (issue 7). Prints figures; asserts nothing.

    make bench          (runs this after bench_storage.py)

Real agent and web processes, a real etcd, a real libvirtd (TCG domains, never started here: the
figures are about storage), btrfs on a loop device (a sparse file on the host disk). For a VM
whose disk holds 1, 10 and 50 GiB of data (CAIRN_BENCH_VM_GIB, default "1,10,50"):
- 10 clones in one API call (POST /vms/<vm>/clones {"count": 10}) to job done, and the job alone;
- a plain full copy of the same disk (`cp --reflink=never` + sync) for comparison (up to 10 GiB:
  the host disk has room for one copy of the largest data set only);
- pool space used before and after the 10 clones;
- a snapshot through the API (median of 5), and restore-as-new through the API.
Then space reclaim at GiB scale (CAIRN_BENCH_RECLAIM_GIB, default 2): the tiny test guest, booted
(TCG), makes an ext2 filesystem on a second disk, writes that much data into it, deletes it and
runs fstrim; printed: the seconds fstrim took and how much of the pool's space came back; and the
running guest snapshotted through the API (quiesced by its guest agent: freeze, snapshot, thaw).
The API is polled every 5 ms, so the figures are what a client waiting for the job sees.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import (GUEST_IP, HOST_IP, VM_BRIDGE, guest_run, libvirt_host, reachable, storage_stack,  # noqa: E402
                     wait_until)
from cairn.runner import Runner  # noqa: E402

SIZES = [int(s) for s in os.environ.get("CAIRN_BENCH_VM_GIB", "1,10,50").split(",")]
FULL_COPY_MAX_GIB = 10
RECLAIM_GIB = int(os.environ.get("CAIRN_BENCH_RECLAIM_GIB", "2"))
GUEST = Path(__file__).resolve().parents[2] / "build" / "guest" / "cairn-testguest.img"
GIB = 1 << 30


def job(session, stack, method: str, path: str, **kwargs) -> tuple[dict, float]:
    """Submit, poll every 5 ms until the job ends; (job, seconds from the request to seeing it done)."""
    started = time.monotonic()
    reply = session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    while True:
        done = session.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=60).json()
        if done["state"] not in ("queued", "running"):
            break
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    assert done["state"] == "success", done
    return done, elapsed


def fill(path: Path, size: int) -> float:
    block = os.urandom(1 << 20)
    started = time.monotonic()
    with open(path, "r+b") as handle:
        for _ in range(size >> 20):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    return time.monotonic() - started


def uploaded_guest(session, stack) -> str:
    """The test guest uploaded into pool tank's images volume (where a VM's disk may be imported
    from); its path."""
    found = session.get(f"{stack.url}/api/v1/images/tank/testguest.img", timeout=60)
    if found.status_code == 200:
        return found.json()["path"]
    with open(GUEST, "rb") as handle:
        reply = session.put(f"{stack.url}/api/v1/images/tank/testguest.img", data=handle, timeout=600,
                            headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 201, reply.text
    return reply.json()["path"]


def used(path: Path) -> int:
    Runner().run(["sync"])
    return os.statvfs(path).f_blocks * os.statvfs(path).f_frsize - os.statvfs(path).f_bfree * os.statvfs(path).f_frsize


def pool_used(pool: Path) -> int:
    Runner().run(["btrfs", "filesystem", "sync", str(pool)])
    stat = os.statvfs(pool)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def reclaim(session, stack, pool: Path) -> tuple[int, float, int, float, tuple[float, bool]]:
    """The guest writes RECLAIM_GIB GiB on its second disk, deletes it, runs fstrim: (bytes written as
    seen by the pool, write seconds, bytes the pool got back, fstrim seconds), and the median API
    time of 5 snapshots of the running guest with whether they were all quiesced by its agent."""
    job(session, stack, "POST", "/vms", json={
        "name": "bvm-trim", "pool": "tank", "vcpus": 1, "memory_mib": 256, "firmware": "bios", "cpu_model": "qemu64",
        "disks": [{"import": uploaded_guest(session, stack)}, {"size": f"{RECLAIM_GIB + 1}G"}],
        "nics": [{"bridge": VM_BRIDGE}]})
    net = pool.parent.parent / "net.cfg"
    net.write_text(f"IP={GUEST_IP}/24\n")
    Runner().run(["mcopy", "-o", "-i", f"{pool / 'vms' / 'bvm-trim' / 'disk0.raw'}@@1M", str(net), "::net.cfg"],
                 env={"MTOOLS_SKIP_CHECK": "1"})
    Runner().run(["ip", "addr", "replace", f"{HOST_IP}/24", "dev", VM_BRIDGE])
    job(session, stack, "POST", "/vms/bvm-trim/actions/start", json={})
    wait_until(lambda: reachable(f"http://{GUEST_IP}/heartbeat"), 180, "the guest's address", interval=0.5)
    guest_run("mke2fs -q /dev/sdb && mkdir -p /mnt/big && mount -t ext2 /dev/sdb /mnt/big && "
              "dd if=/dev/urandom of=/tmp/chunk bs=1M count=4 2>/dev/null")
    empty = pool_used(pool)
    started = time.monotonic()
    guest_run(f"i=0; while [ $i -lt {RECLAIM_GIB * 256} ]; do cat /tmp/chunk; i=$((i+1)); done > /mnt/big/data && sync",
              timeout=3600)
    write_seconds = time.monotonic() - started
    written = pool_used(pool) - empty
    started = time.monotonic()
    guest_run("rm /mnt/big/data && sync && fstrim /mnt/big", timeout=3600)
    trim_seconds = time.monotonic() - started
    freed = empty + written - pool_used(pool)
    # Snapshots of the running guest, quiesced through its guest agent (freeze, snapshot, thaw).
    running = [job(session, stack, "POST", "/vms/bvm-trim/snapshots", json={"name": f"live{i}"}) for i in range(5)]
    live = (statistics.median(seconds for _, seconds in running), all(j["result"]["quiesced"] for j, _ in running))
    job(session, stack, "POST", "/vms/bvm-trim/actions/poweroff", json={})
    job(session, stack, "DELETE", "/vms/bvm-trim")
    return written, write_seconds, freed, trim_seconds, live


def main() -> int:
    rows = []
    trim = None
    with tempfile.TemporaryDirectory(prefix="cairn-bench-vms-", dir="/var/tmp") as tmp:
        with libvirt_host(Path(tmp), "bvm-") as mounts:
            base = Path(tempfile.mkdtemp(prefix="stack-", dir=mounts))
            os.chmod(base, 0o755)
            with storage_stack(base, 1, (max(SIZES) + 6) * 1024) as (stack, loops):
                session = stack.session()
                job(session, stack, "POST", "/pools", json={"name": "tank", "node": stack.node, "disks": loops.ids(),
                                                           "profile": "single"})
                pool = base / "pools" / "tank"
                for gib in SIZES:
                    name = f"bvm-{gib}g"
                    job(session, stack, "POST", "/vms", json={
                        "name": name, "pool": "tank", "vcpus": 1, "memory_mib": 256, "firmware": "bios",
                        "disks": [{"size": f"{gib}G"}], "nics": [{"bridge": VM_BRIDGE}]})
                    disk = pool / "vms" / name / "disk0.raw"
                    filled = fill(disk, gib * GIB)
                    before = used(pool)
                    clones, clone_seconds = job(session, stack, "POST", f"/vms/{name}/clones", json={"count": 10})
                    after = used(pool)
                    job_only = clones["finished_at"] - clones["started_at"]
                    used(pool)             # everything on disk (btrfs and the loop device's file) first
                    snap_jobs = [job(session, stack, "POST", f"/vms/{name}/snapshots", json={"name": f"s{i}"})
                                 for i in range(5)]
                    snaps = [seconds for _, seconds in snap_jobs]
                    snap_job = statistics.median(j["finished_at"] - j["started_at"] for j, _ in snap_jobs)
                    pickup = statistics.median(j["started_at"] - j["created_at"] for j, _ in snap_jobs)
                    print(f"snapshot {gib} GiB: queued → started {pickup * 1000:.0f} ms, started → done "
                          f"{snap_job * 1000:.0f} ms, API call → seen done {statistics.median(snaps) * 1000:.0f} ms "
                          f"(median of 5; {len(session.get(stack.url + '/api/v1/jobs', timeout=60).json()['jobs'])} "
                          "jobs stored)", flush=True)
                    _, restore_seconds = job(session, stack, "POST", f"/vms/{name}/snapshots/s0/restore",
                                             json={"name": f"{name}-restored"})
                    copy_seconds = None
                    if gib <= FULL_COPY_MAX_GIB:
                        started = time.monotonic()
                        Runner().run(["cp", "--reflink=never", str(disk), str(pool / "full-copy.raw")], timeout=3600)
                        Runner().run(["sync"])
                        copy_seconds = time.monotonic() - started
                        os.unlink(pool / "full-copy.raw")
                        used(pool)
                    rows.append((gib, filled, clone_seconds, job_only, copy_seconds, before, after,
                                 statistics.median(snaps), snap_job, restore_seconds))
                    for vm in [f"{name}-{i}" for i in range(1, 11)] + [f"{name}-restored", name]:
                        job(session, stack, "DELETE", f"/vms/{vm}")
                if RECLAIM_GIB and GUEST.exists():
                    trim = reclaim(session, stack, pool)
    print("\nVMs (btrfs on a loop device, real libvirtd; API polled every 5 ms)")
    print(f"{'data':>6} {'fill':>7} {'10 clones API':>14} {'job':>7} {'full copy':>10} {'pool used before/after 10 clones':>34} "
          f"{'snapshot API':>13} {'(job)':>6} {'restore API':>12}")
    for gib, filled, clone_s, job_s, copy_s, before, after, snap_s, snap_job_s, restore_s in rows:
        copy = f"{copy_s:.1f} s" if copy_s is not None else "-"
        print(f"{gib:>4} G {filled:>6.1f}s {clone_s * 1000:>11.0f} ms {job_s * 1000:>4.0f} ms {copy:>10} "
              f"{before / GIB:>15.2f} GiB / {after / GIB:.2f} GiB      {snap_s * 1000:>9.0f} ms {snap_job_s * 1000:>3.0f} ms {restore_s * 1000:>9.0f} ms")
    if trim:
        written, write_s, freed, trim_s, (live_s, quiesced) = trim
        print(f"\nSpace reclaim: the guest (TCG) wrote {written / GIB:.2f} GiB into ext2 on a virtio-scsi disk in "
              f"{write_s:.0f} s, deleted it and ran fstrim: {freed / GIB:.2f} GiB back to the pool in {trim_s:.2f} s "
              f"({freed / GIB / trim_s * 60:.0f} GiB per minute)")
        print(f"Snapshot of the running guest through the API, median of 5: {live_s * 1000:.0f} ms "
              f"({'quiesced by its guest agent' if quiesced else 'NOT all quiesced: crash-consistent'})")
    else:
        print("\nSpace reclaim: skipped (CAIRN_BENCH_RECLAIM_GIB=0 or no test guest: `make guest`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
