"""libvirt domain XML of a VM: golden files compared byte for byte, the XML read back (disk files,
MACs, boot order, discard), escaping, refusals, the readers of libvirt's live XML, and (where
virt-xml-validate and its xmllint are installed) libvirt's own schema accepting the golden files.

Golden files live in tests/fixtures/compute/golden/. To change one, run the tests with
CAIRN_UPDATE_GOLDEN=1: the test rewrites the file and still fails once, so the new output is
reviewed (git diff) before anyone runs the suite green again. tests/fixtures/compute/live-domain.xml
is shaped like `virsh dumpxml` of a running TCG domain (libvirt 9.0: aliases, PCI addresses, the
assigned VNC port)."""

from __future__ import annotations

import dataclasses
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cairn.compute import domain, model
from cairn.compute.domain import disk_target, domain_xml, parse_macs, parse_vnc_port
from cairn.runner import Runner
from environment import missing
from support import assert_golden as golden

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "compute"
GOLDEN = FIXTURES / "golden"
LIVE = FIXTURES / "live-domain.xml"
VALIDATE = shutil.which("virt-xml-validate")
XMLLINT = shutil.which("xmllint")          # virt-xml-validate is a shell script around xmllint
DOMAIN_GOLDEN = ("domain-uefi-disks-cdrom-nics.xml", "domain-bios-tiny-tcg.xml",
                 "domain-description-escaped.xml")
POOLS = "/pools"
GIB = 1 << 30
SPECIAL_DESCRIPTION = 'Tom & Jerry\'s <test> VM: "quotes", a > b && c < d ]]> &amp; stays text'

WEB = model.Vm(
    name="web-1", uuid="6f1c2a4e-3b5d-4c7e-9a8b-0d1e2f3a4b5c", node="node-a", pool="tank",
    vcpus=2, memory_mib=2048, firmware="uefi", cpu_model="Nehalem",
    disks=(model.Disk("disk0", 20 * GIB), model.Disk("disk1", 100 * GIB)),
    nics=(model.Nic("52:54:00:12:34:56", "br0"), model.Nic("52:54:00:ab:cd:ef", "br1")),
    cdrom="/pools/tank/isos/debian-12-netinst.iso", description="Web front end")
# Like the tiny test guest: what TCG boots in seconds.
TINY = model.Vm(
    name="tiny", uuid="0b6e9c1d-2f3a-4b5c-8d7e-6f5a4b3c2d1e", node="node-a", pool="tank",
    vcpus=1, memory_mib=128, firmware="bios", cpu_model="qemu64",
    disks=(model.Disk("disk0", 64 << 20),), nics=(model.Nic("52:54:00:00:00:01"),))


def render(vm: model.Vm, accel: str = "kvm", **kw) -> str:
    return domain_xml(vm, pools_root=POOLS, accel=accel, serial_log=f"/var/log/cairn/vms/{vm.name}.log", **kw)


def parsed(vm: model.Vm, accel: str = "kvm") -> ET.Element:
    return ET.fromstring(render(vm, accel))


def assert_golden(name: str, actual: str) -> None:
    golden(GOLDEN / name, actual)


def test_golden_uefi_vm_with_two_disks_a_cdrom_and_two_nics():
    assert_golden("domain-uefi-disks-cdrom-nics.xml", render(WEB))


def test_golden_bios_vm_like_the_tiny_test_guest_under_tcg():
    assert_golden("domain-bios-tiny-tcg.xml", render(TINY, "tcg"))


def test_golden_description_with_xml_special_characters():
    assert_golden("domain-description-escaped.xml",
                  render(dataclasses.replace(TINY, description=SPECIAL_DESCRIPTION), "tcg"))


def test_description_with_special_characters_round_trips():
    root = parsed(dataclasses.replace(WEB, description=SPECIAL_DESCRIPTION))
    assert SPECIAL_DESCRIPTION == root.findtext("description")


def test_an_empty_description_leaves_the_element_out():
    assert None is parsed(TINY).find("description")


@pytest.mark.parametrize("accel, domain_type", [("kvm", "kvm"), ("tcg", "qemu")])
def test_accelerator_sets_the_domain_type(accel, domain_type):
    assert domain_type == parsed(TINY, accel).get("type")


def test_disks_are_the_vm_subvolume_files_on_consecutive_scsi_units_with_discard():
    disks = parsed(WEB).findall("./devices/disk")
    assert [(d.get("device"), d.find("source").get("file"), d.find("target").get("dev"),
             d.find("address").get("unit")) for d in disks] == [
        ("disk", "/pools/tank/vms/web-1/disk0.raw", "sda", "0"),
        ("disk", "/pools/tank/vms/web-1/disk1.raw", "sdb", "1"),
        ("cdrom", "/pools/tank/isos/debian-12-netinst.iso", "sdc", "2"),
    ]
    data_disks = [d for d in disks if d.get("device") == "disk"]
    assert [d.find("driver").get("discard") for d in data_disks] == ["unmap", "unmap"]
    assert [d.find("driver").get("detect_zeroes") for d in data_disks] == ["unmap", "unmap"]
    assert disks[2].find("readonly") is not None
    assert [c.get("model") for c in parsed(WEB).findall("./devices/controller[@type='scsi']")] == ["virtio-scsi"]


def test_macs_and_bridges_come_from_the_record():
    xml = render(WEB)
    assert ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"] == parse_macs(xml)
    interfaces = ET.fromstring(xml).findall("./devices/interface")
    assert [(i.get("type"), i.find("source").get("bridge"), i.find("model").get("type")) for i in interfaces] == [
        ("bridge", "br0", "virtio"), ("bridge", "br1", "virtio")]


def boot_orders(root: ET.Element) -> dict[str, str]:
    return {d.find("target").get("dev"): d.find("boot").get("order")
            for d in root.iter("disk") if d.find("boot") is not None}


def test_cdrom_boots_first_then_disk0_and_os_has_no_boot_dev():
    root = parsed(WEB)
    assert {"sdc": "1", "sda": "2"} == boot_orders(root)
    assert root.find("./os/boot") is None
    assert len(list(root.iter("boot"))) == 2, "only the cdrom and disk0 carry a boot order"


@pytest.mark.parametrize("cdrom", ["/dev/sda", "/etc/shadow", "/pools/tank/isos/../../../dev/sda", "isos/x.iso"])
def test_a_cdrom_no_vm_may_use_is_never_written_into_the_domain(cdrom):
    with pytest.raises(ValueError, match=f"VM {WEB.name}: cdrom "):
        render(dataclasses.replace(WEB, cdrom=cdrom))


def test_without_cdrom_disk0_boots_first():
    assert {"sda": "1"} == boot_orders(parsed(dataclasses.replace(WEB, cdrom=None)))


def test_uefi_nvram_lives_in_the_vm_subvolume_and_bios_has_no_loader():
    os_element = parsed(WEB).find("os")
    assert (os_element.findtext("loader"), os_element.find("loader").get("type")) == \
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "pflash")
    assert (os_element.findtext("nvram"), os_element.find("nvram").get("template")) == \
        (f"{model.vm_dir(POOLS, 'tank', 'web-1')}/nvram.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd")
    bios = parsed(TINY).find("os")
    assert [child.tag for child in bios] == ["type"]
    assert (bios.find("type").get("machine"), bios.findtext("type")) == ("q35", "hvm")


def test_firmware_paths_are_followed():
    os_element = ET.fromstring(render(WEB, ovmf_code="/fw/CODE.fd", ovmf_vars="/fw/VARS.fd")).find("os")
    assert (os_element.findtext("loader"), os_element.find("nvram").get("template")) == ("/fw/CODE.fd", "/fw/VARS.fd")


def test_cpu_is_the_named_model_never_host_passthrough():
    cpu = parsed(WEB).find("cpu")
    assert (cpu.get("mode"), cpu.findtext("model"), cpu.find("model").get("fallback")) == \
        ("custom", "Nehalem", "forbid")
    assert "host-passthrough" not in render(WEB) and "host-model" not in render(WEB)


def test_vnc_listens_on_loopback_only_with_a_libvirt_chosen_port():
    graphics = parsed(WEB).findall("./devices/graphics")
    assert [(g.get("type"), g.get("port"), g.get("autoport"), g.get("listen")) for g in graphics] == [
        ("vnc", "-1", "yes", "127.0.0.1")]
    assert [(l.get("type"), l.get("address")) for l in graphics[0].findall("listen")] == [("address", "127.0.0.1")]


def test_memory_vcpus_serial_log_and_guest_agent():
    root = parsed(TINY)
    assert [(root.findtext(t), root.find(t).get("unit")) for t in ("memory", "currentMemory")] == \
        [("128", "MiB"), ("128", "MiB")]
    assert root.findtext("vcpu") == "1"
    assert root.find("./devices/serial/log").attrib == {"file": "/var/log/cairn/vms/tiny.log", "append": "on"}
    assert root.find("./devices/channel/target").get("name") == "org.qemu.guest_agent.0"


def test_sixteen_disks_and_a_cdrom_fit_seventeen_do_not():
    sixteen = tuple(model.Disk(f"disk{i}", GIB) for i in range(16))
    root = parsed(dataclasses.replace(WEB, disks=sixteen))
    assert [d.find("target").get("dev") for d in root.iter("disk")][-2:] == ["sdp", "sdq"]
    with pytest.raises(ValueError, match="17 disks, at most 16"):
        render(dataclasses.replace(WEB, disks=sixteen + (model.Disk("disk16", GIB),)))


@pytest.mark.parametrize("changes, accel, message", [
    ({"firmware": "coreboot"}, "kvm", "firmware must be one of uefi, bios"),
    ({}, "hvf", "accelerator must be one of kvm, tcg"),
    ({"description": "bell \x07"}, "kvm", "description: character '\\x07' cannot be written in XML"),
    ({"cdrom": "/isos/nul\x00.iso"}, "kvm", "cdrom must not contain control characters"),
])
def test_what_libvirt_could_not_take_is_refused(changes, accel, message):
    with pytest.raises(ValueError) as caught:
        render(dataclasses.replace(WEB, **changes), accel)
    assert message in str(caught.value)


def test_disk_targets_run_sda_to_sdp_and_one_more_for_the_cdrom():
    assert [disk_target(i) for i in (0, 1, 15, 16)] == ["sda", "sdb", "sdp", "sdq"]
    for bad in (-1, 17, True, "0"):
        with pytest.raises(ValueError):
            disk_target(bad)


def test_output_is_stable_and_ends_with_a_newline():
    assert render(WEB) == render(WEB)
    assert render(WEB).endswith("</domain>\n") and "\t" not in render(WEB)


def test_live_xml_gives_the_assigned_vnc_port_and_macs():
    live = LIVE.read_text()
    assert 5900 == parse_vnc_port(live)
    assert ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"] == parse_macs(live)


def test_no_vnc_port_before_libvirt_assigns_one_or_without_vnc():
    live = LIVE.read_text()
    assert None is parse_vnc_port(render(WEB)), "the defined XML says port -1"
    assert None is parse_vnc_port(live.replace(" port='5900'", ""))
    assert None is parse_vnc_port(live.replace("type='vnc'", "type='spice'"))
    assert [] == parse_macs("<domain type='qemu'><name>x</name><devices/></domain>")


def test_a_nonsense_vnc_port_is_an_error_not_a_port():
    with pytest.raises(ValueError):
        parse_vnc_port(LIVE.read_text().replace("port='5900'", "port='vnc'"))
    with pytest.raises(ValueError):
        parse_vnc_port(LIVE.read_text().replace("port='5900'", "port='70000'"))


def test_macs_are_read_lower_case():
    assert ["52:54:00:ab:cd:ef"] == parse_macs(
        "<domain><devices><interface type='bridge'><mac address='52:54:00:AB:CD:EF'/></interface></devices></domain>")


def test_the_module_stays_pure():
    source = Path(domain.__file__).read_text()
    assert "import libvirt" not in source and "subprocess" not in source and "open(" not in source


@missing(tools={"virt-xml-validate": "Debian package libvirt-clients", "xmllint": "Debian package libxml2-utils"})
@pytest.mark.parametrize("path", [GOLDEN / name for name in DOMAIN_GOLDEN] + [LIVE], ids=lambda p: p.name)
def test_libvirt_schema_accepts_the_golden_files_and_the_live_sample(path):
    result = Runner().run([VALIDATE, str(path), "domain"], check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
