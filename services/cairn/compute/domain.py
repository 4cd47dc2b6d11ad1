"""The libvirt domain XML of a VM, and the few facts read back from the XML libvirt returns.

Pure: no I/O, no libvirt. `domain_xml` is a function of the VM record and the node's paths; the
output has a fixed layout (ElementTree, two-space indent, attributes in the order written here, a
final newline) so golden files stay byte-stable. Every value goes through ElementTree's escaping,
even though records are validated: a description with <, & or quotes round-trips; a character
XML 1.0 cannot carry at all (NUL, most control characters) raises ValueError instead of producing
XML libvirt would refuse.

Invariants of the generated domain:
- q35, x86_64, a named CPU model with fallback forbidden (never host-passthrough), so the VM can
  run on any node; accel "kvm" gives type kvm, "tcg" gives type qemu.
- UEFI keeps its NVRAM inside the VM's subvolume (<pool>/vms/<name>/nvram.fd), so clones and
  snapshots carry the firmware's boot entries with the disks; BIOS means SeaBIOS (no loader).
- Disks are raw files on one virtio-scsi controller, unit N = disk N (target sda, sdb, ...), with
  discard and detect_zeroes set to unmap so a guest's fstrim frees pool space. The CD-ROM, if any,
  takes the unit after the last disk.
- Boot order is per device: the CD-ROM first when there is one, then disk0; <os> has no <boot dev>.
  A CD-ROM path that is not absolute and normalised, or lies in a system directory (/dev, /etc,
  ...), raises ValueError (compute/images.py: the API takes only images a VM may use).
- A VM with cloud-init settings gets its NoCloud seed (<vm dir>/cloud-init.img) as a read-only
  disk on the unit after the disks and the CD-ROM.
- VNC listens on loopback only (the console's websocket proxy reaches it there); libvirt picks
  the port, which `parse_vnc_port` reads back from the live XML.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from cairn.compute import cloudinit, images, model

ACCEL_DOMAIN_TYPE = {"kvm": "kvm", "tcg": "qemu"}
DEFAULT_OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
DEFAULT_OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
NVRAM_FILE = "nvram.fd"
LOOPBACK = "127.0.0.1"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
# Targets sda.. for disk 0..MAX_DISKS-1, plus one more for a CD-ROM after sixteen disks.
MAX_TARGETS = model.MAX_DISKS + 1
# Characters XML 1.0 cannot carry, escaped or not.
NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def disk_target(index: int) -> str:
    """The SCSI target name of unit `index`: 0 -> sda ... 15 -> sdp (16 -> sdq, a CD-ROM's only)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < MAX_TARGETS:
        raise ValueError(f"disk index must be 0 to {MAX_TARGETS - 1}, not {index!r}")
    return "sd" + chr(ord("a") + index)


def domain_xml(vm: model.Vm, *, pools_root: str, accel: str, serial_log: str,
               ovmf_code: str = DEFAULT_OVMF_CODE, ovmf_vars: str = DEFAULT_OVMF_VARS) -> str:
    """The domain XML libvirt defines for `vm` on this node (see the module docstring)."""
    if accel not in ACCEL_DOMAIN_TYPE:
        raise ValueError(f"accelerator must be one of {', '.join(ACCEL_DOMAIN_TYPE)}, not {accel!r}")
    if vm.firmware not in model.FIRMWARE:
        raise ValueError(f"VM {vm.name}: firmware must be one of {', '.join(model.FIRMWARE)}, not {vm.firmware!r}")
    if len(vm.disks) > model.MAX_DISKS:
        raise ValueError(f"VM {vm.name}: {len(vm.disks)} disks, at most {model.MAX_DISKS} are possible")
    shape = images.path_shape_problem(vm.cdrom) if vm.cdrom else None
    if shape:              # a record that bypassed the API's checks: never hand a guest /dev/sda
        raise ValueError(f"VM {vm.name}: cdrom {shape}")

    domain = ET.Element("domain", type=ACCEL_DOMAIN_TYPE[accel])
    _sub(domain, "name", vm.name)
    _sub(domain, "uuid", vm.uuid)
    if vm.description:
        _sub(domain, "description", vm.description)
    _sub(domain, "memory", str(vm.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(vm.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(vm.vcpus), placement="static")

    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch="x86_64", machine="q35")
    if vm.firmware == "uefi":
        _sub(os_element, "loader", ovmf_code, readonly="yes", type="pflash")
        nvram = f"{model.vm_dir(pools_root, vm.pool, vm.name)}/{NVRAM_FILE}"
        _sub(os_element, "nvram", nvram, template=ovmf_vars)

    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    cpu = _sub(domain, "cpu", mode="custom", match="exact", check="none")
    _sub(cpu, "model", vm.cpu_model, fallback="forbid")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    next_boot = 1
    if vm.cdrom:
        cdrom_boot, next_boot = next_boot, next_boot + 1
    for unit, disk in enumerate(vm.disks):
        element = _sub(devices, "disk", type="file", device="disk")
        _sub(element, "driver", name="qemu", type="raw", cache="none", io="native", discard="unmap",
             detect_zeroes="unmap")
        _sub(element, "source", file=model.disk_path(pools_root, vm.pool, vm.name, disk.name))
        _sub(element, "target", dev=disk_target(unit), bus="scsi")
        if unit == 0:
            _sub(element, "boot", order=str(next_boot))
        _drive_address(element, unit)
    if vm.cdrom:
        unit = len(vm.disks)
        element = _sub(devices, "disk", type="file", device="cdrom")
        _sub(element, "driver", name="qemu", type="raw")
        _sub(element, "source", file=vm.cdrom)
        _sub(element, "target", dev=disk_target(unit), bus="scsi")
        _sub(element, "readonly")
        _sub(element, "boot", order=str(cdrom_boot))
        _drive_address(element, unit)
    if vm.cloud_init:
        unit = len(vm.disks) + (1 if vm.cdrom else 0)
        element = _sub(devices, "disk", type="file", device="disk")
        _sub(element, "driver", name="qemu", type="raw")
        _sub(element, "source", file=f"{model.vm_dir(pools_root, vm.pool, vm.name)}/{cloudinit.SEED_FILE}")
        _sub(element, "target", dev=disk_target(unit), bus="scsi")
        _sub(element, "readonly")
        _drive_address(element, unit)
    _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    _sub(devices, "controller", type="usb", index="0", model="qemu-xhci")
    for nic in vm.nics:
        interface = _sub(devices, "interface", type="bridge")
        _sub(interface, "mac", address=nic.mac)
        _sub(interface, "source", bridge=nic.bridge)
        _sub(interface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=serial_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    _sub(devices, "input", type="tablet", bus="usb")
    graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen=LOOPBACK)
    _sub(graphics, "listen", type="address", address=LOOPBACK)
    video = _sub(devices, "video")
    _sub(video, "model", type="virtio", heads="1", primary="yes")
    _sub(devices, "memballoon", model="virtio")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")

    ET.indent(domain, space="  ")
    return ET.tostring(domain, encoding="unicode") + "\n"


def parse_vnc_port(xml: str) -> int | None:
    """The VNC port of a running domain from its live XML; None without VNC or before libvirt
    assigned one (port -1 or missing)."""
    graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
    if graphics is None:
        return None
    port = graphics.get("port")
    if port is None or port == "-1":
        return None
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"VNC port {port!r} in the domain XML is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"VNC port {number} in the domain XML is out of range")
    return number


def parse_macs(xml: str) -> list[str]:
    """The MAC addresses of the domain's interfaces, lower case, in device order."""
    return [mac.get("address", "").lower()
            for mac in ET.fromstring(xml).findall("./devices/interface/mac")]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    """A child element; text and attribute values are checked to be representable in XML."""
    for name, value in attributes.items():
        _check_xml_text(f"{tag}@{name}", value)
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        _check_xml_text(tag, text)
        element.text = text
    return element


def _drive_address(disk: ET.Element, unit: int) -> None:
    _sub(disk, "address", type="drive", controller="0", bus="0", target="0", unit=str(unit))


def _check_xml_text(where: str, value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected text, got {type(value).__name__}")
    bad = NOT_XML.search(value)
    if bad:
        raise ValueError(f"{where}: character {bad.group()!r} cannot be written in XML")
