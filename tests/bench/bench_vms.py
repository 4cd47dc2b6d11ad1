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

from support import VM_BRIDGE, libvirt_host, storage_stack  # noqa: E402
from cairn.runner import Runner  # noqa: E402

SIZES = [int(s) for s in os.environ.get("CAIRN_BENCH_VM_GIB", "1,10,50").split(",")]
FULL_COPY_MAX_GIB = 10
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


def used(path: Path) -> int:
    Runner().run(["sync"])
    return os.statvfs(path).f_blocks * os.statvfs(path).f_frsize - os.statvfs(path).f_bfree * os.statvfs(path).f_frsize


def main() -> int:
    rows = []
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
                    copy_seconds = None
                    if gib <= FULL_COPY_MAX_GIB:
                        started = time.monotonic()
                        Runner().run(["cp", "--reflink=never", str(disk), str(pool / "full-copy.raw")], timeout=3600)
                        Runner().run(["sync"])
                        copy_seconds = time.monotonic() - started
                        os.unlink(pool / "full-copy.raw")
                    snaps = [job(session, stack, "POST", f"/vms/{name}/snapshots", json={"name": f"s{i}"})[1]
                             for i in range(5)]
                    _, restore_seconds = job(session, stack, "POST", f"/vms/{name}/snapshots/s0/restore",
                                             json={"name": f"{name}-restored"})
                    rows.append((gib, filled, clone_seconds, job_only, copy_seconds, before, after,
                                 statistics.median(snaps), restore_seconds))
                    for vm in [f"{name}-{i}" for i in range(1, 11)] + [f"{name}-restored", name]:
                        job(session, stack, "DELETE", f"/vms/{vm}")
    print("\nVMs (btrfs on a loop device, real libvirtd; API polled every 5 ms)")
    print(f"{'data':>6} {'fill':>7} {'10 clones API':>14} {'job':>7} {'full copy':>10} {'pool used before/after 10 clones':>34} "
          f"{'snapshot API':>13} {'restore API':>12}")
    for gib, filled, clone_s, job_s, copy_s, before, after, snap_s, restore_s in rows:
        copy = f"{copy_s:.1f} s" if copy_s is not None else "-"
        print(f"{gib:>4} G {filled:>6.1f}s {clone_s * 1000:>11.0f} ms {job_s * 1000:>4.0f} ms {copy:>10} "
              f"{before / GIB:>15.2f} GiB / {after / GIB:.2f} GiB      {snap_s * 1000:>9.0f} ms {restore_s * 1000:>9.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
