"""cloud-init NoCloud seeds: settings checked (every problem at once), the password only as a hash,
meta-data/user-data that cloud-init reads (JSON is YAML), host names for copies, the seed argv."""

from __future__ import annotations

import json

from cairn.compute import cloudinit, domain, model

HASH = "$6$saltsalt$" + "a" * 86
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAiBs5xOBnDTD6R/rf/T9GPDXC00MDbnufS9RzHSfiMc me@laptop"


def check(value):
    problems: dict[str, str] = {}
    return cloudinit.check(value, problems, lambda password: HASH), problems


def test_settings_are_checked_and_the_password_becomes_its_hash():
    settings, problems = check({"user": "ops", "password": "Secret-123", "ssh_keys": [KEY + "\n"]})
    assert problems == {}
    assert settings == {"hostname": None, "user": "ops", "password_hash": HASH, "ssh_keys": [KEY]}
    _, problems = check({"user": "root", "hostname": "Bad_Host", "ssh_keys": ["not a key"], "password": "short",
                         "colour": "red"})
    assert set(problems) == {"cloud_init.user", "cloud_init.hostname", "cloud_init.ssh_keys", "cloud_init.password",
                             "cloud_init.colour"}
    _, problems = check({"user": "ops"})
    assert problems == {"cloud_init": "give a password, SSH keys or both: otherwise nobody can log in"}
    assert check(None) == (None, {})


def test_seed_files_say_who_may_log_in_and_what_the_machine_is_called():
    settings = {"hostname": None, "user": "ops", "password_hash": HASH, "ssh_keys": [KEY]}
    user = cloudinit.user_data(settings, "web-1")
    assert user.startswith("#cloud-config\n")
    assert json.loads(user.split("\n", 1)[1]) == {
        "hostname": "web-1", "fqdn": "web-1", "preserve_hostname": False, "ssh_pwauth": True,
        "users": [{"name": "ops", "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL", "groups": ["sudo"],
                   "lock_passwd": False, "passwd": HASH, "ssh_authorized_keys": [KEY]}]}
    assert json.loads(cloudinit.meta_data("uuid-1", "web-1")) == {"instance-id": "uuid-1", "local-hostname": "web-1"}
    keys_only = json.loads(cloudinit.user_data({**settings, "password_hash": None}, "x").split("\n", 1)[1])
    assert keys_only["ssh_pwauth"] is False and keys_only["users"][0]["lock_passwd"] is True


def test_a_copy_takes_its_own_name_unless_a_name_was_chosen():
    assert cloudinit.hostname_for({"hostname": None}, "web-2", "web") == "web-2"
    assert cloudinit.hostname_for({"hostname": "web"}, "web-2", "web") == "web-2"
    assert cloudinit.hostname_for({"hostname": "shop"}, "web-2", "web") == "shop"
    assert cloudinit.hostname_for({"hostname": "shop"}, "web") == "shop"


def test_the_seed_is_a_fat_image_labelled_cidata_and_attached_read_only():
    assert cloudinit.seed_argvs("/v/seed.img", "/t/m", "/t/u") == [
        ["mkfs.vfat", "-C", "-n", "CIDATA", "/v/seed.img", "1024"],
        ["mcopy", "-i", "/v/seed.img", "/t/m", "::meta-data"],
        ["mcopy", "-i", "/v/seed.img", "/t/u", "::user-data"]]
    vm = model.Vm("web", "uuid-1", "n", "tank", 1, 512, "bios", disks=(model.Disk("disk0", 1 << 30),),
                  cloud_init={"hostname": None, "user": "ops", "password_hash": HASH, "ssh_keys": []})
    xml = domain.domain_xml(vm, pools_root="/pools", accel="tcg", serial_log="/l")
    assert ('<source file="/pools/tank/vms/web/cloud-init.img" />\n      <target dev="sdb" bus="scsi" />\n'
            '      <readonly />') in xml
