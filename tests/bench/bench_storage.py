"""Storage benchmarks (issue 5). Prints figures; asserts nothing.

    make bench          (runs this after bench_api.py)

Real agent and web processes, a real etcd, btrfs on a loop device (sparse file on the host disk):
- snapshot creation time, API call to job done, of a volume holding 10 GiB in 10,000 files
  (and the bare `btrfs subvolume snapshot -r` for comparison);
- pool status API latency: GET /api/v1/pools/<pool> p50/p99, one client;
- scrub throughput: bytes verified / scrub job time, with the loop device's backing file cached
  in host memory and again after dropping the host's caches (then the host disk is the limit).
CAIRN_BENCH_GIB (default 10) scales the data set down for a quick run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import finish_job, storage_stack  # noqa: E402
from cairn.runner import Runner  # noqa: E402

GIB = int(os.environ.get("CAIRN_BENCH_GIB", "10"))
FILES = 10_000


def job(session, stack, method: str, path: str, **kwargs) -> tuple[dict, float]:
    started = time.monotonic()
    done = finish_job(session, stack, method, path, 3600, **kwargs)
    elapsed = time.monotonic() - started
    assert done["state"] == "success", done
    return done, elapsed


def fill(directory: Path, total_bytes: int, files: int) -> float:
    """Write `files` files adding up to total_bytes (incompressible-ish pattern); returns seconds."""
    size = total_bytes // files
    block = os.urandom(1 << 20)
    started = time.monotonic()
    for index in range(files):
        sub = directory / f"d{index // 500:03d}"
        sub.mkdir(exist_ok=True)
        with open(sub / f"f{index:05d}", "wb") as fh:
            left = size
            while left > 0:
                chunk = block[:min(left, len(block))]
                fh.write(chunk)
                left -= len(chunk)
    os.sync()
    return time.monotonic() - started


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-storage-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        with storage_stack(base, 1, (GIB + 4) * 1024) as (stack, loops):
            session = stack.session()
            job(session, stack, "POST", "/pools", json={"name": "bench", "node": stack.node,
                                                        "disks": loops.ids(), "profile": "single"})
            _, _ = job(session, stack, "POST", "/pools/bench/volumes", json={"name": "data"})
            volume = base / "pools" / "bench" / "data"
            written = fill(volume, GIB << 30, FILES)
            print(f"wrote {GIB} GiB in {FILES} files in {written:.0f} s ({(GIB << 10) / written:.0f} MiB/s)")

            times = []
            for index in range(5):
                _, elapsed = job(session, stack, "POST", "/pools/bench/volumes/data/snapshots",
                                 json={"name": f"s{index}"})
                times.append(elapsed)
            runner = Runner()
            bare = []
            for index in range(5):
                started = time.monotonic()
                runner.run(["btrfs", "subvolume", "snapshot", "-r", str(volume),
                            str(base / "pools" / "bench" / ".snapshots" / "data" / f"bare{index}")])
                bare.append(time.monotonic() - started)
            print(f"snapshot of a volume with {GIB} GiB in {FILES} files, API call to job done: "
                  f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms (5 runs); "
                  f"bare btrfs snapshot: median {statistics.median(bare) * 1000:.0f} ms")

            latencies = []
            for _ in range(200):
                started = time.perf_counter()
                reply = session.get(stack.url + "/api/v1/pools/bench")
                latencies.append(time.perf_counter() - started)
                assert reply.status_code == 200
            latencies.sort()
            print(f"GET /api/v1/pools/bench (status with 1 volume, 10 snapshots), 200 requests, one client: "
                  f"p50 {latencies[99] * 1000:.1f} ms, p99 {latencies[197] * 1000:.1f} ms")

            for label in ("backing file in the host page cache", "host caches dropped first"):
                if label.startswith("host caches"):
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                done, elapsed = job(session, stack, "POST", "/pools/bench/scrub")
                scrubbed = done["result"]["bytes_scrubbed"]
                print(f"scrub of {scrubbed / 2**30:.1f} GiB on one loop device ({label}): {elapsed:.1f} s, "
                      f"{scrubbed / 2**20 / elapsed:.0f} MiB/s (job time; progress polled every second)")
            job(session, stack, "DELETE", "/pools/bench", params={"confirm": "bench"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
