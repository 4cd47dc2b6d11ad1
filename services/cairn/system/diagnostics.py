"""The node diagnostics job: a handful of real read-only checks, each a step with progress.

Steps: kernel and OS (uname), block devices (lsblk -J), filesystems (df), network addresses
(ip -j addr), cluster store round-trip latency (N samples), clock sync (chronyc, if present).
It changes nothing on the node, so it can be aborted at any step.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from cairn.errors import CommandFailed, ValidationError
from cairn.jobs.registry import job_kind
from cairn.storage import disks
from cairn.system.files import parse_assignments

MAX_SAMPLES = 100_000


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - {"samples"}
    problems = {f"params.{name}": "unknown parameter" for name in unknown}
    samples = params.get("samples", 20)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        problems["params.samples"] = f"must be a whole number from 1 to {MAX_SAMPLES}"
    if problems:
        raise ValidationError(problems)
    return {"samples": samples}


# --- parsers (pure) --------------------------------------------------------------------------

def parse_df(text: str) -> list[dict[str, Any]]:
    """`df -P -B1` rows: filesystem, size, used, available (bytes), mountpoint."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        rows.append({"filesystem": parts[0], "size": int(parts[1]), "used": int(parts[2]),
                     "available": int(parts[3]), "mountpoint": parts[5]})
    return rows


def parse_ip_addr(text: str) -> list[dict[str, Any]]:
    """`ip -j addr` → interfaces with state and addresses."""
    return [{"name": link.get("ifname"), "state": link.get("operstate"),
             "mac": link.get("address"),
             "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                           if "local" in a]}
            for link in json.loads(text)]


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"samples": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(p99, 3), "max_ms": round(ordered[-1], 3)}


# --- the job ---------------------------------------------------------------------------------
@job_kind("node.diagnostics", title="Diagnostics of {node}", check_params=check_params,
          locks=lambda node, params: [f"node-diagnostics:{node}"], abortable=True)
def run_diagnostics(ctx, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}

    ctx.progress(5, "kernel and OS")
    uname = ctx.runner.run(["uname", "-srvm"], timeout=10).stdout.strip()
    try:
        with open("/etc/os-release") as fh:
            os_name = parse_assignments(fh.read()).get("PRETTY_NAME", "unknown")
    except OSError:
        os_name = "unknown"
    result["kernel"] = uname
    result["os"] = os_name
    ctx.log(f"kernel: {uname}; OS: {os_name}")
    ctx.check_abort()

    ctx.progress(15, "block devices")
    lsblk = ctx.runner.run(disks.LSBLK_ARGV, timeout=20)
    result["block_devices"] = [d.to_dict() for d in disks.parse_lsblk(lsblk.stdout)]
    ctx.log(f"{len(result['block_devices'])} block devices")
    ctx.check_abort()

    ctx.progress(30, "filesystems")
    result["filesystems"] = parse_df(ctx.runner.run(["df", "-P", "-B1"], timeout=20, check=False).stdout)
    full = [f["mountpoint"] for f in result["filesystems"] if f["size"] and f["used"] / f["size"] > 0.9]
    ctx.log(f"{len(result['filesystems'])} filesystems" + (f"; over 90% full: {', '.join(full)}" if full else ""))
    ctx.check_abort()

    ctx.progress(45, "network")
    result["network"] = parse_ip_addr(ctx.runner.run(["ip", "-j", "addr"], timeout=10).stdout)
    ctx.log("interfaces: " + ", ".join(f"{n['name']} ({n['state']})" for n in result["network"]))
    ctx.check_abort()

    samples = params["samples"]
    ctx.progress(55, f"cluster store latency (0/{samples})")
    timings: list[float] = []
    for index in range(samples):
        started = time.perf_counter()
        ctx.store.get(f"jobs/{ctx.job.id}")
        timings.append((time.perf_counter() - started) * 1000)
        if index % 50 == 49 or index == samples - 1:
            ctx.progress(55 + int(35 * (index + 1) / samples),
                         f"cluster store latency ({index + 1}/{samples})")
            ctx.check_abort()
    result["store_latency"] = latency_summary(timings)
    ctx.log("store round trip p50 {p50_ms} ms, p99 {p99_ms} ms".format(**result["store_latency"]))

    ctx.progress(92, "clock")
    try:
        tracking = ctx.runner.run(["chronyc", "-c", "tracking"], timeout=10)
        result["clock"] = {"chrony": tracking.stdout.strip()}
        ctx.log("chrony tracking: " + tracking.stdout.strip()[:120])
    except CommandFailed as exc:
        result["clock"] = {"chrony": None, "note": exc.message}
        ctx.log(f"clock sync not checked: {exc.message}")
    return result
