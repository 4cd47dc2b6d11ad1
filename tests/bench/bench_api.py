"""Benchmarks for the skeleton (issue 2): API latency and idle memory. Prints figures; asserts nothing.

    make bench

- p50/p99 latency of GET /api/v1/jobs with 100 jobs stored, under 4 concurrent clients;
- idle RSS of cairn-agent and cairn-web (gunicorn master + workers), after the load, settled.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import start_stack  # noqa: E402
from cairn.jobs import model  # noqa: E402
from cairn.jobs.service import JobService, record_writes  # noqa: E402

JOBS = 100
CLIENTS = 4
REQUESTS_PER_CLIENT = 250


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def seed_jobs(stack) -> None:
    jobs = JobService(stack.store())
    for _ in range(JOBS):
        now = time.time()
        record = model.Job(id=model.new_job_id(now), kind="node.diagnostics", node="bench-node",
                           params={"samples": 20}, title="Diagnostics of bench-node", created_at=now)
        record = model.advance(record, model.Start(now))
        for step in range(12):
            record = model.advance(record, model.Progress(now, step * 8, f"step {step}", f"log line {step}"))
        record = model.advance(record, model.Succeed(now, {"store_latency": {"p50_ms": 1.0}}))
        jobs.store.txn([], record_writes(record))     # record, listing order, log: as the agent stores them


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        stack = start_stack(Path(tmp))
        try:
            seed_jobs(stack)
            sessions = [stack.session() for _ in range(CLIENTS)]
            url = stack.url + "/api/v1/jobs"
            assert len(sessions[0].get(url).json()["jobs"]) == JOBS
            timings: list[float] = []
            lock = threading.Lock()

            def client(session) -> None:
                local = []
                for _ in range(REQUESTS_PER_CLIENT):
                    started = time.perf_counter()
                    reply = session.get(url)
                    local.append((time.perf_counter() - started) * 1000)
                    reply.raise_for_status()
                with lock:
                    timings.extend(local)

            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(s,)) for s in sessions]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started

            time.sleep(5)  # let things settle before reading idle memory
            agent_rss = rss_kib(stack.agent.pid)
            web_pids = [stack.web.pid] + children(stack.web.pid)
            web_rss = {pid: rss_kib(pid) for pid in web_pids}
            etcd_rss = rss_kib(stack.etcd.members[0].daemon.pid)

            print(f"GET /api/v1/jobs with {JOBS} jobs stored, {CLIENTS} concurrent clients, "
                  f"{len(timings)} requests over TLS:")
            print(f"  p50 {statistics.median(timings):.1f} ms   p99 {percentile(timings, 0.99):.1f} ms   "
                  f"max {max(timings):.1f} ms   throughput {len(timings) / elapsed:.0f} req/s")
            print("Idle RSS:")
            print(f"  cairn-agent                 {agent_rss / 1024:.1f} MiB")
            print(f"  cairn-web master            {web_rss[stack.web.pid] / 1024:.1f} MiB")
            for pid in web_pids[1:]:
                print(f"  cairn-web worker {pid:<8}   {web_rss[pid] / 1024:.1f} MiB")
            print(f"  cairn-web total             {sum(web_rss.values()) / 1024:.1f} MiB "
                  f"({len(web_pids) - 1} workers)")
            print(f"  etcd (for reference)        {etcd_rss / 1024:.1f} MiB")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
