"""SMART polling against a real store: the agent's monitor keeps the last report per disk and raises
one event per degradation. Disks and smartctl answer from output captured on the appliance (this
host has no SMART disks; the e2e suite reads QEMU's for real)."""

from __future__ import annotations

import json
from pathlib import Path

from cairn.cluster import events
from cairn.storage import disks
from cairn.storage.monitor import HEALTH, StorageMonitor
from fakes import RecordingRunner

FIX = Path(__file__).parent.parent / "fixtures"


def runner_with(sata: dict) -> RecordingRunner:
    answers = {
        tuple(disks.LSBLK_ARGV): (0, (FIX / "lsblk" / "appliance-plain.json").read_text(), ""),
        tuple(disks.BLKID_ARGV): (0, (FIX / "blkid" / "appliance-plain.txt").read_text(), ""),
        ("smartctl", "-j", "-a", "/dev/sda"): (0, json.dumps(sata), ""),
        ("smartctl", "-j", "-a", "/dev/nvme0n1"): (0, (FIX / "smartctl" / "qemu-nvme-a.json").read_text(), ""),
    }
    virtio = (FIX / "smartctl" / "qemu-virtio-unsupported.json").read_text()
    for name in ("vda", "vdb", "vdc"):
        answers[("smartctl", "-j", "-a", f"/dev/{name}")] = (1, virtio, "")
    return RecordingRunner(answers)


def test_degradation_raises_one_event_and_the_report_is_kept(store):
    good = json.loads((FIX / "smartctl" / "qemu-sata-a.json").read_text())
    monitor = StorageMonitor(runner_with(good), store, "n1")
    assert monitor.poll_smart() == []
    kept = store.get(f"{HEALTH}n1/CAIRN-SATA1")
    assert kept["verdict"] == "good" and kept["report"]["temperature_c"] == 31
    assert store.get(f"{HEALTH}n1/CAIRN-VD1")["verdict"] == "unknown"

    worse = json.loads(json.dumps(good))
    next(a for a in worse["ata_smart_attributes"]["table"] if a["id"] == 5)["raw"]["value"] = 8
    monitor = StorageMonitor(runner_with(worse), store, "n1")
    raised = monitor.poll_smart()
    assert raised == ["disk CAIRN-SATA1 on n1: health went from good to warning: 8 reallocated sectors",
                      "disk CAIRN-SATA1 on n1: reallocated sectors rose from 0 to 8"]
    assert monitor.poll_smart() == [], "an unchanged bad state is not told again"
    told = [e for e in events.recent(store, 10) if e["source"] == "disk:CAIRN-SATA1"]
    assert [e["severity"] for e in told] == ["warning", "warning"]
    assert store.get(f"{HEALTH}n1/CAIRN-SATA1")["reasons"] == ["8 reallocated sectors"]
