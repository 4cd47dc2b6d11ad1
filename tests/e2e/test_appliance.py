"""The appliance image booted under UEFI firmware (OVMF) in QEMU: first boot makes it a machine of
its own, the services come up, and a reboot keeps its state without redoing first boot."""

import re
import time

import requests

DATA_DISKS = {"CAIRN-VD1", "CAIRN-VD2", "CAIRN-NVME1", "CAIRN-SATA1"}


def test_multi_user_reached_with_no_failed_units(appliance):
    state = appliance.succeed("systemctl is-system-running --wait || true", timeout=300).strip()
    failed = appliance.succeed("systemctl list-units --failed --no-legend --plain").strip()
    assert (state, failed) == ("running", "")
    assert appliance.succeed("systemctl is-active etcd cairn-agent cairn-web").split() == ["active"] * 3


def test_booted_through_uefi_from_the_fallback_path(appliance):
    assert appliance.succeed("test -d /sys/firmware/efi && echo uefi").strip() == "uefi"
    assert "root=PARTUUID=" in appliance.succeed("cat /proc/cmdline")


def test_first_boot_made_an_identity_of_its_own(appliance):
    machine_id = appliance.succeed("cat /etc/machine-id").strip()
    hostname = appliance.succeed("hostname").strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    assert hostname == f"cairn-{machine_id[:6]}"
    assert appliance.succeed("ls /etc/ssh/ssh_host_ed25519_key.pub").strip()
    root_bytes = int(appliance.succeed("findmnt -bno SIZE /").strip())
    assert root_bytes > 20 * 2**30, "root filesystem was not grown to the disk"


def test_console_answers_https_with_the_appliances_own_certificate(appliance):
    ca = appliance.ca_file()
    reply = requests.get(appliance.url + "/api/v1/health", verify=ca, timeout=30)
    hostname = appliance.succeed("hostname").strip()
    assert reply.json()["status"] == "ok"
    assert reply.json()["node"] == hostname
    issuer = appliance.succeed("openssl x509 -noout -issuer -in /var/lib/cairn/tls/server.pem")
    assert f"Cairn CA {hostname}" in issuer


def test_generated_admin_password_is_on_the_console_and_in_a_root_only_file(appliance):
    from_console = appliance.console_password()
    stat = appliance.succeed("stat -c '%a %U' /var/lib/cairn/admin-password").split()
    from_file = appliance.succeed("cat /var/lib/cairn/admin-password").strip()
    assert stat == ["600", "root"]
    assert from_console == from_file
    assert appliance.api().get(appliance.url + "/api/v1/jobs").status_code == 200
    wrong = requests.post(appliance.url + "/api/v1/auth/login", json={"username": "admin", "password": "x"},
                          verify=appliance.ca_file(), timeout=30)
    assert wrong.status_code == 401


def test_agent_reports_the_four_data_disks_by_serial(appliance):
    session = appliance.api()
    deadline = time.monotonic() + 120
    while True:
        nodes = session.get(appliance.url + "/api/v1/nodes").json()["nodes"]
        serials = {disk["serial"] for node in nodes for disk in node.get("disks", [])}
        if DATA_DISKS <= serials:
            break
        assert time.monotonic() < deadline, f"disks reported: {sorted(serials)}"
        time.sleep(2)
    disks = {d["serial"]: d for d in nodes[0]["disks"]}
    assert (disks["CAIRN-NVME1"]["bus"], disks["CAIRN-NVME1"]["media"]) == ("nvme", "nvme")
    assert (disks["CAIRN-SATA1"]["bus"], disks["CAIRN-SATA1"]["model"]) == ("sata", "CAIRN SATA DISK")
    assert disks["CAIRN-ROOT"]["usage"]["kind"] == "system"
    assert {disks[s]["usage"]["kind"] for s in DATA_DISKS} == {"free"}


def test_etcd_is_healthy(appliance):
    health = appliance.succeed("curl -s http://127.0.0.1:2379/health")
    assert '"health":"true"' in health.replace(" ", "")


def test_reboot_keeps_state_and_does_not_redo_first_boot(appliance):
    def identity():
        return {
            "machine_id": appliance.succeed("cat /etc/machine-id").strip(),
            "hostname": appliance.succeed("hostname").strip(),
            "host_key": appliance.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub").strip(),
            "password": appliance.succeed("cat /var/lib/cairn/admin-password").strip(),
            "ca": appliance.succeed("cat /var/lib/cairn/tls/ca.pem"),
            "stamp": appliance.succeed("stat -c %Y /var/lib/cairn/firstboot.done").strip(),
        }

    session = appliance.api()
    node = session.get(appliance.url + "/api/v1/nodes").json()["nodes"][0]["name"]
    job = session.post(f"{appliance.url}/api/v1/nodes/{node}/diagnostics", json={"samples": 10}).json()
    deadline = time.monotonic() + 120
    while session.get(f"{appliance.url}/api/v1/jobs/{job['id']}").json()["state"] != "success":
        assert time.monotonic() < deadline
        time.sleep(1)
    before = identity()
    boot_id = appliance.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    appliance.machine.ssh(appliance.ssh_port, "systemctl reboot", timeout=30)
    deadline = time.monotonic() + 600
    while True:
        time.sleep(5)
        result = appliance.machine.ssh(appliance.ssh_port, "cat /proc/sys/kernel/random/boot_id", timeout=15)
        if result.returncode == 0 and result.stdout.strip() not in ("", boot_id):
            break
        assert time.monotonic() < deadline, "the appliance did not come back after reboot"
    appliance.wait_ready()

    assert identity() == before
    condition = appliance.succeed("systemctl show cairn-firstboot -p ConditionResult --value").strip()
    assert condition == "no", "first boot ran again"
    after = appliance.api(password=before["password"])
    assert after.get(f"{appliance.url}/api/v1/jobs/{job['id']}").json()["state"] == "success"
    state = appliance.succeed("systemctl is-system-running --wait || true", timeout=300).strip()
    assert state == "running"
