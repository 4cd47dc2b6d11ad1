"""SMART: read health with `smartctl -j -a`, judge it, notice when it gets worse, run self-tests.

Three parts, as for every wrapped tool: argv builders (pure), `parse_report` (smartctl's JSON →
`SmartReport`, pure, tested on output captured from QEMU's SATA and NVMe disks plus edited copies
for failing disks), and `assess` / `degradations` (pure judgements). The agent runs `read()` on
every disk each `storage.smart_interval` seconds, keeps the last report per disk in the store
(`disk-health/<node>/<disk id>`, written only by that node's agent) and raises a `disk.health` event
for each degradation `degradations(old, new)` names.

smartctl's exit status is a bit mask, decoded deliberately (smartctl(8) "RETURN VALUES"): bits 0-1
mean smartctl could not talk to the device (no report), bit 2 that some command failed (the report
is still good: QEMU's SATA disk fails the extended logs), bits 3-7 are health signals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from cairn.errors import CommandFailed, PreconditionFailed

EXIT_BITS = {
    0: "command line did not parse",
    1: "device open failed",
    2: "a SMART or other command to the disk failed",
    3: "SMART status check returned DISK FAILING",
    4: "prefail attributes at or below threshold",
    5: "attributes were at or below threshold in the past",
    6: "the device error log contains errors",
    7: "the self-test log contains errors",
}
SELFTEST_TYPES = ("short", "long")

# ATA attribute ids
REALLOCATED, PENDING, OFFLINE_UNCORRECTABLE = 5, 197, 198
# Temperatures (Celsius) past which a disk is worth a warning.
HOT = {"ata": 55, "nvme": 70, "scsi": 55}
WEAR_WARNING = 80          # NVMe percentage_used
VERDICTS = ("good", "unknown", "warning", "failing")   # in order of concern


def read_argv(path: str) -> list[str]:
    return ["smartctl", "-j", "-a", path]


def selftest_argv(path: str, kind: str) -> list[str]:
    if kind not in SELFTEST_TYPES:
        raise ValueError(f"self-test type must be one of {SELFTEST_TYPES}, not {kind!r}")
    return ["smartctl", "-j", "-t", kind, path]


def abort_selftest_argv(path: str) -> list[str]:
    return ["smartctl", "-j", "-X", path]


@dataclass(frozen=True)
class SelfTest:
    running: bool
    remaining_percent: int | None          # while running
    last_type: str | None                  # "Short offline", "Extended", "Short", ...
    last_result: str | None                # "Completed without error", ...
    last_passed: bool | None
    last_hours: int | None                 # power-on hours when it ran


@dataclass(frozen=True)
class SmartReport:
    device: str
    protocol: str                          # ata, nvme, scsi, or "" when unsupported
    supported: bool
    problem: str | None                    # why there is no report, when unsupported
    exit_status: int
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None
    passed: bool | None = None
    temperature_c: int | None = None
    power_on_hours: int | None = None
    reallocated_sectors: int | None = None
    pending_sectors: int | None = None
    offline_uncorrectable: int | None = None
    failing_attributes: tuple[str, ...] = ()   # ATA attributes at or below threshold now
    media_errors: int | None = None            # NVMe
    percentage_used: int | None = None         # NVMe wear
    available_spare: int | None = None         # NVMe
    critical_warning: int | None = None        # NVMe bit mask
    selftest_supported: bool = False
    selftest: SelfTest | None = None
    signals: tuple[str, ...] = field(default_factory=tuple)   # exit bits 3-7 in words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SmartReport":
        data = dict(data)
        if data.get("selftest"):
            data["selftest"] = SelfTest(**data["selftest"])
        for key in ("failing_attributes", "signals"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_report(text: str, device: str = "") -> SmartReport:
    """smartctl -j output (any of -a/-x/-c) → SmartReport. Raises CommandFailed on non-JSON output."""
    try:
        data = json.loads(text)
    except ValueError:
        raise CommandFailed(["smartctl", "-j", "-a", device], 0, "smartctl printed no JSON") from None
    meta = data.get("smartctl", {})
    status = int(meta.get("exit_status", 0))
    device = data.get("device", {}).get("name", device)
    protocol = (data.get("device", {}).get("protocol") or "").lower()
    messages = [m.get("string", "") for m in meta.get("messages", []) if m.get("severity") == "error"]
    signals = tuple(EXIT_BITS[bit] for bit in range(3, 8) if status & (1 << bit))
    if status & 0b11 or not protocol:
        return SmartReport(device, protocol, False, "; ".join(messages) or EXIT_BITS[1 if status & 2 else 0],
                           status, signals=signals)
    support = data.get("smart_support", {})
    if support and not support.get("available", True):
        return SmartReport(device, protocol, False, "the disk has no SMART support", status,
                           model=data.get("model_name"), serial=data.get("serial_number"))
    report: dict[str, Any] = dict(
        device=device, protocol=protocol, supported=True, problem=None, exit_status=status,
        model=data.get("model_name"), serial=data.get("serial_number"),
        firmware=data.get("firmware_version"),
        passed=data.get("smart_status", {}).get("passed"),
        temperature_c=_int(data.get("temperature", {}).get("current")),
        power_on_hours=_int(data.get("power_on_time", {}).get("hours")),
        signals=signals)
    if protocol == "ata":
        table = {a.get("id"): a for a in data.get("ata_smart_attributes", {}).get("table", [])}

        def raw(attr_id: int) -> int | None:
            return _int(table.get(attr_id, {}).get("raw", {}).get("value")) if attr_id in table else None

        report.update(
            reallocated_sectors=raw(REALLOCATED), pending_sectors=raw(PENDING),
            offline_uncorrectable=raw(OFFLINE_UNCORRECTABLE),
            failing_attributes=tuple(a.get("name", str(a.get("id"))) for a in table.values()
                                     if a.get("when_failed") == "now"
                                     or (a.get("thresh", 0) and _int(a.get("value")) is not None
                                         and a["value"] <= a["thresh"] and a.get("flags", {}).get("prefailure"))),
            selftest_supported=bool(data.get("ata_smart_data", {}).get("capabilities", {}).get("self_tests_supported")),
            selftest=_ata_selftest(data))
    elif protocol == "nvme":
        log = data.get("nvme_smart_health_information_log", {})
        report.update(
            media_errors=_int(log.get("media_errors")), percentage_used=_int(log.get("percentage_used")),
            available_spare=_int(log.get("available_spare")), critical_warning=_int(log.get("critical_warning")),
            temperature_c=report["temperature_c"] if report["temperature_c"] is not None else _int(log.get("temperature")),
            power_on_hours=report["power_on_hours"] if report["power_on_hours"] is not None else _int(log.get("power_on_hours")),
            selftest_supported="nvme_self_test_log" in data,
            selftest=_nvme_selftest(data))
    return SmartReport(**report)


def _ata_selftest(data: dict) -> SelfTest | None:
    current = data.get("ata_smart_data", {}).get("self_test", {}).get("status")
    table = data.get("ata_smart_self_test_log", {}).get("standard", {}).get("table") or []
    if current is None and not table:
        return None
    value = _int((current or {}).get("value")) or 0
    running = value >> 4 == 0xF
    remaining = _int((current or {}).get("remaining_percent"))
    if running and remaining is None:
        remaining = (value & 0xF) * 10
    last = table[0] if table else {}
    return SelfTest(running, remaining if running else None, last.get("type", {}).get("string"),
                    last.get("status", {}).get("string"), last.get("status", {}).get("passed"),
                    _int(last.get("lifetime_hours")))


def _nvme_selftest(data: dict) -> SelfTest | None:
    log = data.get("nvme_self_test_log")
    if log is None:
        return None
    operation = _int((log.get("current_self_test_operation") or {}).get("value")) or 0
    done = _int(log.get("current_self_test_completion_percent"))
    table = log.get("table") or []
    last = table[0] if table else {}
    result = last.get("self_test_result", {})
    return SelfTest(operation != 0, (100 - done) if operation and done is not None else None,
                    last.get("self_test_code", {}).get("string"), result.get("string"),
                    (result.get("value") == 0) if result else None, _int(last.get("power_on_hours")))


# --- judgements (pure) ------------------------------------------------------------------------
def assess(report: SmartReport) -> tuple[str, list[str]]:
    """(verdict, reasons): good, warning, failing, or unknown when the disk has no SMART."""
    if not report.supported:
        return "unknown", [report.problem or "no SMART data"]
    failing, warning = [], []
    if report.passed is False:
        failing.append("SMART overall health check failed")
    if report.failing_attributes:
        failing.append("attributes at or below threshold: " + ", ".join(report.failing_attributes))
    if report.critical_warning:
        failing.append(f"NVMe critical warning 0x{report.critical_warning:02x}")
    if report.percentage_used is not None and report.percentage_used >= 100:
        failing.append(f"NVMe rated endurance used up ({report.percentage_used} %)")
    for label, value in (("reallocated sectors", report.reallocated_sectors),
                         ("pending sectors", report.pending_sectors),
                         ("offline uncorrectable sectors", report.offline_uncorrectable),
                         ("media errors", report.media_errors)):
        if value:
            warning.append(f"{value} {label}")
    if report.percentage_used is not None and WEAR_WARNING <= report.percentage_used < 100:
        warning.append(f"NVMe wear {report.percentage_used} % of rated endurance")
    hot = HOT.get(report.protocol, 55)
    if report.temperature_c is not None and report.temperature_c >= hot:
        warning.append(f"temperature {report.temperature_c} °C (warning from {hot} °C)")
    if report.selftest and report.selftest.last_passed is False:
        warning.append(f"last self-test: {report.selftest.last_result}")
    for signal in report.signals:
        if "FAILING" in signal and not any("health check" in f for f in failing):
            failing.append(signal)
        elif "in the past" in signal or "error log" in signal:
            warning.append(signal)
    if failing:
        return "failing", failing + warning
    if warning:
        return "warning", warning
    return "good", []


def degradations(old: SmartReport | None, new: SmartReport) -> list[str]:
    """What got worse from one report to the next, in words (empty: nothing to tell anyone)."""
    if old is None:
        verdict, reasons = assess(new)
        return [f"health is {verdict}: " + "; ".join(reasons)] if verdict in ("warning", "failing") else []
    found = []
    old_verdict, _ = assess(old)
    new_verdict, reasons = assess(new)
    if VERDICTS.index(new_verdict) > VERDICTS.index(old_verdict) and new_verdict != "unknown":
        found.append(f"health went from {old_verdict} to {new_verdict}: " + "; ".join(reasons))
    for label, attr in (("reallocated sectors", "reallocated_sectors"), ("pending sectors", "pending_sectors"),
                        ("offline uncorrectable sectors", "offline_uncorrectable"), ("media errors", "media_errors")):
        before, after = getattr(old, attr), getattr(new, attr)
        if after is not None and after > (before or 0):
            found.append(f"{label} rose from {before or 0} to {after}")
    for mark in (WEAR_WARNING, 90, 100):
        if (new.percentage_used or 0) >= mark > (old.percentage_used or 0):
            found.append(f"NVMe wear reached {new.percentage_used} % (crossed {mark} %)")
    if new.selftest and new.selftest.last_passed is False and (
            old.selftest is None or old.selftest.last_hours != new.selftest.last_hours
            or old.selftest.last_passed is not False):
        found.append(f"self-test failed: {new.selftest.last_result}")
    return found


# --- effects --------------------------------------------------------------------------------
def read(runner, path: str) -> SmartReport:
    result = runner.run(read_argv(path), timeout=60, check=False)
    return parse_report(result.stdout, path)


def start_selftest(runner, path: str, kind: str) -> SmartReport:
    """Start a self-test; refuses (nothing started) when the disk cannot run one."""
    report = read(runner, path)
    if not report.supported:
        raise PreconditionFailed(f"{path} has no SMART: {report.problem}", device=path)
    if not report.selftest_supported:
        raise PreconditionFailed(f"{path} ({report.protocol.upper()}) does not support self-tests", device=path)
    if report.selftest and report.selftest.running:
        raise PreconditionFailed(f"a self-test is already running on {path}", device=path)
    result = runner.run(selftest_argv(path, kind), timeout=60, check=False)
    if result.returncode & 0b111:
        raise CommandFailed(list(result.argv), result.returncode, result.stderr or result.stdout[-500:])
    return report


def abort_selftest(runner, path: str) -> None:
    runner.run(abort_selftest_argv(path), timeout=60, check=False)
