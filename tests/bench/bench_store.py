"""Store benchmarks (issue 13, points 1 and 2). Prints figures; asserts nothing.

    make bench          (or: .venv/bin/python tests/bench/bench_store.py [idle|jobs])

idle — how fast an idle node grows the cluster store. A real etcd, cairn-agent, cairn-web and
       libvirtd; 4 pools on loop devices (a volume each), 20 VMs (defined, stopped) and 10 SMB
       shares with their users. After everything settled (CAIRN_BENCH_SETTLE_S, default 60 s),
       a watch on the stack's whole key root counts every write for CAIRN_BENCH_IDLE_MIN minutes
       (default 10). Printed: revisions and bytes (keys + values) written per hour, the top
       writers by key prefix, the database size, and the days until etcd's quota (2 GiB) would
       be reached if no history were ever compacted (with compaction, only an hour is kept).
jobs — GET /api/v1/jobs (p50/p99 of 200 sequential requests, a page of 100) and a job's start
       latency (submit → seen running, median of 15, polled every 5 ms) with 100, then 10,000
       finished jobs stored.

Written so it also runs on older Cairn code (to print "before" figures): it uses the API and the
test stack helpers only, and writes seeded jobs in whatever layout the code under test has.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_api import percentile  # noqa: E402  (tests/bench: the script's folder)
from support import VM_BRIDGE, libvirt_host, start_stack, storage_stack  # noqa: E402
from cairn.cluster.store import Put  # noqa: E402
from cairn.jobs import model  # noqa: E402

IDLE_MINUTES = float(os.environ.get("CAIRN_BENCH_IDLE_MIN", "10"))
SETTLE_SECONDS = float(os.environ.get("CAIRN_BENCH_SETTLE_S", "60"))
QUOTA = 2 * 1024 ** 3


def job(session, stack, method: str, path: str, timeout: float = 600, **kwargs) -> dict:
    reply = session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]
    deadline = time.monotonic() + timeout
    while True:
        done = session.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=60).json()
        if done["state"] not in ("queued", "running"):
            assert done["state"] == "success", done
            return done
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        time.sleep(0.05)


def call(session, stack, method: str, path: str, **kwargs) -> dict:
    reply = session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
    assert reply.status_code < 300, f"{method} {path}: {reply.status_code} {reply.text}"
    return reply.json()


def db_size(store) -> int:
    try:
        return int(store._post("/maintenance/status", {}, idempotent=True).get("dbSize", 0))
    except Exception:           # noqa: BLE001 (a figure, not a test)
        return 0


def idle() -> None:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-store-", dir="/var/tmp") as tmp:
        with libvirt_host(Path(tmp), "bst-") as mounts:
            base = Path(tempfile.mkdtemp(prefix="stack-", dir=mounts))
            os.chmod(base, 0o755)
            with storage_stack(base, 4, 1024) as (stack, loops):
                session = stack.session()
                setup = time.monotonic()
                for index, disk in enumerate(loops.ids()):
                    job(session, stack, "POST", "/pools", json={"name": f"p{index}", "node": stack.node,
                                                               "disks": [disk], "profile": "single"})
                    job(session, stack, "POST", f"/pools/p{index}/volumes", json={"name": "data"})
                call(session, stack, "POST", "/file-groups", json={"name": "office"})
                for index in range(10):
                    call(session, stack, "POST", "/file-users", json={"name": f"user{index}", "password": "Secret-123",
                                                                     "groups": ["office"]})
                    call(session, stack, "POST", "/shares", json={
                        "name": f"share{index}", "pool": f"p{index % 4}", "volume": "data", "smb": {},
                        "permissions": [{"principal": "group:office", "access": "rw"},
                                        {"principal": f"user:user{index}", "access": "ro"}]})
                for index in range(20):
                    job(session, stack, "POST", "/vms", json={
                        "name": f"bst-{index}", "pool": f"p{index % 4}", "vcpus": 1, "memory_mib": 128,
                        "firmware": "bios", "disks": [{"size": "1G"}], "nics": [{"bridge": VM_BRIDGE}]})
                print(f"set-up: 4 pools, 4 volumes, 10 users, 10 shares, 20 VMs in {time.monotonic() - setup:.0f} s; "
                      f"settling {SETTLE_SECONDS:.0f} s", flush=True)
                time.sleep(SETTLE_SECONDS)
                store = stack.store()
                stop = threading.Event()
                counts: Counter[str] = Counter()
                sizes: Counter[str] = Counter()
                start_revision = store.revision()
                size_before = db_size(store)

                def watch() -> None:
                    import json
                    for event in store.watch("", start_revision + 1, idle_timeout=1.0, stop=stop):
                        if event is None:
                            continue
                        prefix = event.key.split("/", 1)[0]
                        counts[prefix] += 1
                        sizes[prefix] += len(store.full_key(event.key)) + (
                            len(json.dumps(event.value, sort_keys=True)) if event.value is not None else 0)

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                started = time.monotonic()
                time.sleep(IDLE_MINUTES * 60)
                elapsed = time.monotonic() - started
                revisions = store.revision() - start_revision
                stop.set()
                watcher.join(5)
                size_after = db_size(store)
    hours = elapsed / 3600
    written = sum(sizes.values())
    per_day = written / hours * 24
    print(f"\nIdle node (4 pools, 20 VMs stopped, 10 shares), watched {elapsed / 60:.1f} min:")
    print(f"  {revisions / hours:,.0f} revisions per hour, {written / hours / 1024:,.1f} KiB written per hour "
          f"({per_day / 1024 ** 2:,.2f} MiB per day)")
    for prefix, count in counts.most_common(8):
        print(f"    {prefix + '/':<22} {count / hours:>8,.0f} writes/h {sizes[prefix] / hours / 1024:>10,.1f} KiB/h")
    print(f"  database file {size_before / 1024 ** 2:.1f} → {size_after / 1024 ** 2:.1f} MiB")
    if per_day > 0:
        print(f"  days until the 2 GiB quota if history were never compacted: {QUOTA / per_day:,.0f} "
              f"({QUOTA / per_day / 365:,.1f} years)")
    else:
        print("  nothing was written: the quota is never reached by an idle node")


def seed(stack, count: int) -> None:
    """Finished jobs straight into the store, in the layout of the code under test."""
    store = stack.store()
    new_layout = hasattr(model.Job, "to_record")   # log apart, listing order index
    now = time.time() - count
    ops: list[Put] = []
    for number in range(count):
        moment = now + number
        record = model.Job(id=model.new_job_id(moment), kind="node.diagnostics", node=stack.node,
                           params={"samples": 20}, title=f"Diagnostics of {stack.node}", created_at=moment)
        record = model.advance(record, model.Start(moment))
        for step in range(12):
            record = model.advance(record, model.Progress(moment, step * 8, f"step {step}", f"log line {step}"))
        record = model.advance(record, model.Succeed(moment, {"store_latency": {"p50_ms": 1.0}}))
        if new_layout:
            from cairn.jobs.service import record_writes
            ops += record_writes(record)
        else:
            ops.append(Put(f"jobs/{record.id}", record.to_dict()))
        if len(ops) >= 100:
            store.txn([], ops)
            ops = []
    if ops:
        store.txn([], ops)


def measure(stack, session) -> tuple[float, float, float]:
    url = stack.url + "/api/v1/jobs"
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        reply = session.get(url, params={"limit": 100}, timeout=60)
        timings.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    starts = []
    for _ in range(15):
        started = time.perf_counter()
        reply = session.post(f"{stack.url}/api/v1/nodes/{stack.node}/diagnostics", json={"samples": 5}, timeout=60)
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        while session.get(f"{url}/{job_id}", timeout=60).json()["state"] == "queued":
            time.sleep(0.005)
        starts.append((time.perf_counter() - started) * 1000)
        while session.get(f"{url}/{job_id}", timeout=60).json()["state"] == "running":
            time.sleep(0.02)
    return statistics.median(timings), percentile(timings, 0.99), statistics.median(starts)


def jobs() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="cairn-bench-jobs-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            session = stack.session()
            stored = 0
            for target in (100, 10_000):
                seed(stack, target - stored)
                stored = target
                time.sleep(3)                       # let the agent's job loop settle
                rows.append((target, *measure(stack, session)))
        finally:
            stack.stop()
    print("\nJobs with many finished jobs stored (real agent, web and etcd; API over TLS):")
    print(f"  {'stored':>7} {'GET /jobs p50':>14} {'p99':>9} {'job start (submit → running)':>30}")
    for stored, p50, p99, start in rows:
        print(f"  {stored:>7,} {p50:>11.1f} ms {p99:>6.1f} ms {start:>27.0f} ms")


def main(argv: list[str]) -> int:
    parts = argv or ["jobs", "idle"]
    if "jobs" in parts:
        jobs()
    if "idle" in parts:
        idle()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
