"""Storage in a booted appliance, where md RAID and SMART are real: SMART read from QEMU's NVMe and
SATA disks, md RAID1 with a disk failed and replaced (the rebuild is watched to the end), md RAID5
with a pool on it that survives a reboot. Small virtio disks keep md resyncs short under TCG."""

from __future__ import annotations

import time

import pytest

from support import ARTIFACTS, wait_until

SMALL = [f"CAIRN-SM{i}" for i in range(1, 8)]    # tests/e2e/conftest.py: SMALL_DISKS, 128 MiB each


@pytest.fixture(scope="module")
def nas(request, testbed_nodes, as_appliance):
    """node2 of the shared testbed (its small disks are used by this module only)."""
    appliance = as_appliance(testbed_nodes(1).nodes[0])
    session = appliance.api()
    node = session.get(appliance.url + "/api/v1/nodes").json()["nodes"][0]["name"]
    yield appliance, session, node
    if request.session.testsfailed:
        keep = ARTIFACTS / "e2e"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "storage-journal.txt").write_text(
            appliance.machine.ssh(appliance.ssh_port, "journalctl -b --no-pager -n 3000", timeout=60).stdout)


def api(nas, method: str, path: str, **kwargs):
    appliance, session, _ = nas
    return session.request(method, appliance.url + "/api/v1" + path, timeout=60, **kwargs)


def job_ends(nas, reply, timeout: float = 600, seen: list | None = None) -> dict:
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]

    def ended():
        job = api(nas, "GET", f"/jobs/{job_id}").json()
        if seen is not None:
            seen.append(job["progress"])
        return job if job["state"] not in ("queued", "running") else None

    return wait_until(ended, timeout, f"job {job_id}", interval=1.0)


def succeeded(job: dict) -> dict:
    assert job["state"] == "success", f"{job['title']}: {job.get('error')}"
    return job


def array_status(nas, name: str) -> dict:
    return api(nas, "GET", f"/arrays/{name}").json().get("status") or {}


def test_smart_is_read_from_the_nvme_and_sata_disks(nas):
    _, _, node = nas
    nvme = wait_until(lambda: (d := api(nas, "GET", f"/nodes/{node}/disks/CAIRN-NVME1").json()).get("health") and d,
                      180, "the first SMART poll")
    assert nvme["health"]["verdict"] == "good"
    assert nvme["health"]["report"]["protocol"] == "nvme"
    assert nvme["health"]["report"]["percentage_used"] == 0 and nvme["health"]["report"]["media_errors"] == 0
    sata = api(nas, "GET", f"/nodes/{node}/disks/CAIRN-SATA1").json()
    assert sata["health"]["verdict"] == "good" and sata["health"]["report"]["protocol"] == "ata"
    assert isinstance(sata["health"]["report"]["power_on_hours"], int)
    assert api(nas, "GET", f"/nodes/{node}/disks/CAIRN-VD1").json()["health"]["verdict"] == "unknown"
    job = succeeded(job_ends(nas, api(nas, "POST", f"/nodes/{node}/disks/CAIRN-SATA1/selftest", json={"type": "short"})))
    assert job["result"]["passed"] is True and job["result"]["result"] == "Completed without error"
    refused = job_ends(nas, api(nas, "POST", f"/nodes/{node}/disks/CAIRN-NVME1/selftest", json={"type": "short"}))
    assert refused["state"] == "failed" and "does not support self-tests" in refused["error"]


def test_raid1_disk_failed_and_replaced_rebuilds(nas):
    _, _, node = nas
    bad = api(nas, "POST", "/arrays", json={"name": "mirror", "node": node, "level": "raid5", "disks": SMALL[:2]})
    assert bad.status_code == 400 and "needs at least 3 disks, 2 given" in bad.json()["error"]["message"]
    system = api(nas, "POST", "/arrays", json={"name": "mirror", "node": node, "level": "raid1",
                                                "disks": ["CAIRN-ROOT", SMALL[0]]})
    assert system.status_code == 409 and "system disk" in system.json()["error"]["message"]
    succeeded(job_ends(nas, api(nas, "POST", "/arrays", json={"name": "mirror", "node": node, "level": "raid1",
                                                              "disks": SMALL[:2]})))
    wait_until(lambda: array_status(nas, "mirror").get("health") == "clean", 600, "the initial resync")
    disks = {d["id"]: d for d in api(nas, "GET", "/disks", params={"node": node}).json()["disks"]}
    assert disks[SMALL[0]]["usage"]["kind"] == "md"

    succeeded(job_ends(nas, api(nas, "POST", "/arrays/mirror/fail", json={"disk": SMALL[1]})))
    status = wait_until(lambda: (s := array_status(nas, "mirror")).get("health") == "degraded" and s, 120,
                        "the array to show degraded")
    assert any("faulty" in m["state"] for m in status["members"])
    wait_until(lambda: any("mirror is degraded" in e["message"] for e in api(nas, "GET", "/events").json()["events"]),
               120, "a degraded event")

    progress: list[int] = []
    appliance = nas[0]
    appliance.succeed("echo 4000 > /proc/sys/dev/raid/speed_limit_max")   # ~30 s, so progress can be seen
    started = time.monotonic()
    try:
        job = succeeded(job_ends(nas, api(nas, "POST", "/arrays/mirror/replace",
                                          json={"old": SMALL[1], "new": SMALL[2]}), seen=progress))
    finally:
        appliance.succeed("echo 200000 > /proc/sys/dev/raid/speed_limit_max")
    print(f"RAID1 rebuild of 128 MiB under TCG: {time.monotonic() - started:.0f} s; progress seen {sorted(set(progress))}")
    assert job["result"]["disks"] == [SMALL[0], SMALL[2]]
    status = array_status(nas, "mirror")
    assert status["health"] == "clean" and status["active_devices"] == 2
    assert any(5 < p < 100 for p in progress), "the rebuild's progress was reported along the way"


def test_raid5_pool_survives_a_reboot(nas):
    appliance, _, node = nas
    succeeded(job_ends(nas, api(nas, "POST", "/arrays", json={"name": "parity", "node": node, "level": "raid5",
                                                              "disks": SMALL[3:6]})))
    job = succeeded(job_ends(nas, api(nas, "POST", "/pools", json={"name": "vault", "node": node, "array": "parity"})))
    assert job["result"]["path"] == "/pools/vault"
    succeeded(job_ends(nas, api(nas, "POST", "/pools/vault/volumes", json={"name": "docs"})))
    appliance.succeed("echo kept > /pools/vault/docs/proof.txt && sync")
    wait_until(lambda: array_status(nas, "parity").get("health") == "clean", 900, "the RAID5 initial sync")
    boot_id = appliance.succeed("cat /proc/sys/kernel/random/boot_id").strip()
    rebooted_at = time.time()
    appliance.machine.ssh(appliance.ssh_port, "systemctl reboot", timeout=30)
    wait_until(lambda: (r := appliance.machine.ssh(appliance.ssh_port, "cat /proc/sys/kernel/random/boot_id",
                                                   timeout=15)).returncode == 0 and r.stdout.strip() not in ("", boot_id),
               600, "the appliance to come back", interval=5)
    appliance.wait_ready()
    wait_until(lambda: appliance.machine.ssh(appliance.ssh_port, "cat /pools/vault/docs/proof.txt",
                                             timeout=15).stdout.strip() == "kept", 180, "the pool mounted again")
    pool = wait_until(lambda: (p := api(nas, "GET", "/pools/vault").json())["status"].get("health") == "online"
                      and p["status"]["observed_at"] > rebooted_at and p, 120, "the pool's status after the reboot")
    assert pool["status"]["mounted"] is True
    assert array_status(nas, "parity")["health"] in ("clean", "resyncing")
    assert "ARRAY /dev/md/parity" in appliance.succeed("cat /etc/mdadm/mdadm.conf")


def test_raid5_grows_by_an_active_member_and_its_pool_with_it(nas):
    appliance, _, node = nas
    before = api(nas, "GET", "/pools/vault").json()["status"]["usage"]["device_size"]
    progress: list[int] = []
    succeeded(job_ends(nas, api(nas, "POST", "/arrays/parity/grow", json={"disk": SMALL[6]}), timeout=900,
                       seen=progress))
    status = array_status(nas, "parity")
    assert (status["raid_devices"], status["active_devices"], status["spare_devices"]) == (4, 4, 0), \
        "the new disk is an active member, not a spare"
    assert api(nas, "GET", "/arrays/parity").json()["disks"] == SMALL[3:7]
    after = wait_until(lambda: (u := api(nas, "GET", "/pools/vault").json()["status"]["usage"]["device_size"]) > before
                       and u, 120, "the pool to see the bigger array")
    print(f"RAID5 grown from 3 to 4 disks: pool {before >> 20} MiB -> {after >> 20} MiB")
    assert appliance.succeed("cat /pools/vault/docs/proof.txt").strip() == "kept"


def test_deleting_an_array_frees_its_disks(nas):
    _, _, node = nas
    held = api(nas, "DELETE", "/arrays/parity", params={"confirm": "parity"})
    assert held.status_code == 409 and "holds pool vault" in held.json()["error"]["message"]
    unconfirmed = api(nas, "DELETE", "/arrays/mirror")
    assert unconfirmed.status_code == 400 and "confirm='mirror'" in unconfirmed.json()["error"]["message"]
    succeeded(job_ends(nas, api(nas, "DELETE", "/arrays/mirror", params={"confirm": "mirror"})))
    disks = {d["id"]: d for d in api(nas, "GET", "/disks", params={"node": node}).json()["disks"]}
    assert {disks[SMALL[0]]["usage"]["kind"], disks[SMALL[2]]["usage"]["kind"]} == {"free"}
    assert "mirror" not in [a["name"] for a in api(nas, "GET", "/arrays").json()["arrays"]]
