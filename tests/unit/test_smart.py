"""SMART parsing and judgement, on smartctl JSON captured from the appliance's QEMU disks (and
copies of it edited the way a failing disk reports, since QEMU's values never change)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from cairn.errors import CommandFailed, PreconditionFailed
from cairn.storage import smart
from fakes import RecordingRunner

FIX = Path(__file__).parent.parent / "fixtures" / "smartctl"


def load(name: str) -> dict:
    return json.loads((FIX / name).read_text())


def report(data: dict) -> smart.SmartReport:
    return smart.parse_report(json.dumps(data))


def set_ata_raw(data: dict, attr_id: int, value: int, name: str = "attr") -> dict:
    table = data["ata_smart_attributes"]["table"]
    for attr in table:
        if attr["id"] == attr_id:
            attr["raw"]["value"] = value
            return data
    table.append({"id": attr_id, "name": name, "value": 100, "worst": 100, "thresh": 0,
                  "flags": {"value": 50, "prefailure": False}, "raw": {"value": value, "string": str(value)}})
    return data


def test_sata_report_from_qemu_reads_health_temperature_hours_and_sectors():
    got = report(load("qemu-sata-a.json"))
    assert (got.protocol, got.supported, got.passed) == ("ata", True, True)
    assert (got.serial, got.model) == ("CAIRN-SATA1", "CAIRN SATA DISK")
    assert (got.temperature_c, got.power_on_hours) == (31, 1)
    assert (got.reallocated_sectors, got.pending_sectors) == (0, None)
    assert got.selftest_supported is True
    assert smart.assess(got) == ("good", [])


def test_nvme_report_from_qemu_reads_wear_media_errors_and_no_selftest_support():
    got = report(load("qemu-nvme-a.json"))
    assert (got.protocol, got.passed, got.serial) == ("nvme", True, "CAIRN-NVME1")
    assert (got.media_errors, got.percentage_used, got.critical_warning, got.temperature_c) == (0, 0, 0, 50)
    assert got.selftest_supported is False, "QEMU's NVMe has no device self-test log"
    assert smart.assess(got) == ("good", [])


def test_exit_bit_2_from_extended_logs_still_gives_a_report():
    got = report(load("qemu-sata-x-rc4.json"))
    assert got.exit_status == 4 and got.supported and got.passed is True
    assert got.signals == ()


def test_virtio_disk_without_smart_is_unknown_not_an_error():
    got = report(load("qemu-virtio-unsupported.json"))
    assert got.supported is False
    assert "Unable to detect device type" in got.problem
    assert smart.assess(got)[0] == "unknown"


def test_self_test_log_after_a_short_test():
    got = report(load("qemu-sata-after-short-test.json"))
    assert got.selftest == smart.SelfTest(False, None, "Short offline", "Completed without error", True, 4660)


def test_running_ata_self_test_shows_remaining_percent():
    data = load("qemu-sata-a.json")
    data["ata_smart_data"]["self_test"]["status"] = {"value": 249, "string": "in progress, 90% remaining",
                                                     "remaining_percent": 90}
    assert report(data).selftest.running and report(data).selftest.remaining_percent == 90
    data["ata_smart_data"]["self_test"]["status"] = {"value": 243, "string": "in progress"}
    assert report(data).selftest.remaining_percent == 30


def test_nvme_self_test_log_is_read_when_present():
    data = load("qemu-nvme-a.json")
    data["nvme_self_test_log"] = {"current_self_test_operation": {"value": 1, "string": "Short"},
                                  "current_self_test_completion_percent": 40,
                                  "table": [{"self_test_code": {"value": 1, "string": "Short"},
                                             "self_test_result": {"value": 7, "string": "Completed: failed segments"},
                                             "power_on_hours": 12}]}
    got = report(data)
    assert got.selftest_supported
    assert got.selftest == smart.SelfTest(True, 60, "Short", "Completed: failed segments", False, 12)


def test_failing_sata_disk_is_failing_with_every_reason():
    data = load("qemu-sata-a.json")
    data["smart_status"]["passed"] = False
    data["smartctl"]["exit_status"] = 8 | 16
    set_ata_raw(data, 5, 24)
    attr = next(a for a in data["ata_smart_attributes"]["table"] if a["id"] == 5)
    attr.update(value=30, when_failed="now", flags={"value": 51, "prefailure": True})
    verdict, reasons = smart.assess(report(data))
    assert verdict == "failing"
    assert "SMART overall health check failed" in reasons
    assert "attributes at or below threshold: Reallocated_Sector_Ct" in reasons
    assert "24 reallocated sectors" in reasons


def test_pending_sectors_and_heat_are_warnings():
    data = set_ata_raw(load("qemu-sata-a.json"), 197, 3, "Current_Pending_Sector")
    data["temperature"]["current"] = 58
    verdict, reasons = smart.assess(report(data))
    assert verdict == "warning"
    assert reasons == ["3 pending sectors", "temperature 58 °C (warning from 55 °C)"]


def test_nvme_critical_warning_and_wear():
    data = load("qemu-nvme-a.json")
    data["nvme_smart_health_information_log"].update(critical_warning=4, percentage_used=100)
    assert smart.assess(report(data))[0] == "failing"
    data["nvme_smart_health_information_log"].update(critical_warning=0, percentage_used=85, media_errors=2)
    assert smart.assess(report(data)) == ("warning", ["2 media errors", "NVMe wear 85 % of rated endurance"])


def test_degradations_name_what_got_worse_and_stay_quiet_otherwise():
    good = report(load("qemu-sata-a.json"))
    assert smart.degradations(good, good) == []
    assert smart.degradations(None, good) == []
    worse_data = set_ata_raw(load("qemu-sata-a.json"), 5, 8)
    worse = report(worse_data)
    changes = smart.degradations(good, worse)
    assert changes == ["health went from good to warning: 8 reallocated sectors",
                       "reallocated sectors rose from 0 to 8"]
    assert smart.degradations(worse, worse) == [], "the same bad state is told once, not at every poll"
    nvme = load("qemu-nvme-a.json")
    old = report(nvme)
    nvme = copy.deepcopy(nvme)
    nvme["nvme_smart_health_information_log"]["percentage_used"] = 91
    assert smart.degradations(old, report(nvme))[1:] == ["NVMe wear reached 91 % (crossed 80 %)",
                                                         "NVMe wear reached 91 % (crossed 90 %)"]


def test_report_round_trips_through_the_store_encoding():
    got = report(load("qemu-sata-after-short-test.json"))
    assert smart.SmartReport.from_dict(json.loads(json.dumps(got.to_dict()))) == got


def test_garbage_output_is_a_command_failure_naming_smartctl():
    with pytest.raises(CommandFailed, match="smartctl"):
        smart.parse_report("Segmentation fault", "/dev/sdz")


def test_selftest_is_refused_on_a_disk_that_cannot_run_one():
    nvme = (FIX / "qemu-nvme-a.json").read_text()
    runner = RecordingRunner({("smartctl", "-j", "-a", "/dev/nvme0n1"): (0, nvme, "")})
    with pytest.raises(PreconditionFailed, match="does not support self-tests"):
        smart.start_selftest(runner, "/dev/nvme0n1", "short")
    assert runner.calls == [("smartctl", "-j", "-a", "/dev/nvme0n1")], "nothing was started"


def test_selftest_starts_on_sata():
    sata = (FIX / "qemu-sata-a.json").read_text()
    runner = RecordingRunner({("smartctl", "-j", "-a", "/dev/sda"): (0, sata, "")})
    smart.start_selftest(runner, "/dev/sda", "long")
    assert runner.calls[-1] == ("smartctl", "-j", "-t", "long", "/dev/sda")
    with pytest.raises(ValueError):
        smart.selftest_argv("/dev/sda", "conveyance")
