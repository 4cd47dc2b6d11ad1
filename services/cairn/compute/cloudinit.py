"""cloud-init's NoCloud seed for a VM made from a cloud image (pure: the seed's files and the argv
that build it; the VM job runs them).

The seed is a small FAT image labelled CIDATA holding `meta-data` and `user-data`, attached to
the VM as a read-only disk; cloud-init in the guest finds it by label. `instance-id` is the VM's
UUID, so a clone or a restored copy (new UUID, new seed) runs cloud-init again and takes its own
host name, while a reboot of the same VM does not. The password is only ever kept as a SHA-512
crypt hash (`openssl passwd -6`, made when the VM is created); the user gets sudo without a
password, as cloud images' default users do. Both files are JSON, which YAML reads as is, so no
value can break out of its field.
"""

from __future__ import annotations

import json
import re
from typing import Any

SEED_FILE = "cloud-init.img"
SEED_LABEL = "CIDATA"
SEED_KIB = 1024
USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
SSH_KEY = re.compile(r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                     r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\x00-\x1f\x7f]*)?")
HASH = re.compile(r"\$6\$[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}")
RESERVED_USERS = {"root", "daemon", "bin", "sys", "nobody"}


def check(value: Any, problems: dict[str, str], hash_password) -> dict[str, Any] | None:
    """A VM's cloud-init settings from API input: {hostname?, user, password? , ssh_keys?};
    the password is replaced by its hash (`hash_password`)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problems["cloud_init"] = "must be an object with user, password and/or ssh_keys, hostname"
        return None
    for key in sorted(set(map(str, value)) - {"hostname", "user", "password", "ssh_keys"}):
        problems[f"cloud_init.{key}"] = "unknown setting"
    user = value.get("user", "cairn")
    if not isinstance(user, str) or not USER.fullmatch(user) or user in RESERVED_USERS:
        problems["cloud_init.user"] = "a user name: 1-32 of a-z, 0-9, '_' and '-' (not root)"
    hostname = value.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or not HOSTNAME.fullmatch(hostname)):
        problems["cloud_init.hostname"] = "a host name: 1-63 of a-z, 0-9 and '-'"
    keys = value.get("ssh_keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and SSH_KEY.fullmatch(k.strip()) for k in keys):
        problems["cloud_init.ssh_keys"] = "a list of OpenSSH public keys (ssh-ed25519 AAAA... comment)"
        keys = []
    password = value.get("password")
    password_hash = None
    if password is not None:
        if not isinstance(password, str) or not 8 <= len(password) <= 128 or "\n" in password:
            problems["cloud_init.password"] = "8 to 128 characters on one line"
        else:
            password_hash = hash_password(password)
            if not HASH.fullmatch(password_hash):
                problems["cloud_init.password"] = "could not be hashed"
    if password is None and not keys:
        problems["cloud_init"] = "give a password, SSH keys or both: otherwise nobody can log in"
    return {"hostname": hostname, "user": user, "password_hash": password_hash,
            "ssh_keys": [k.strip() for k in keys]}


def meta_data(instance_id: str, hostname: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2) + "\n"


def user_data(settings: dict[str, Any], hostname: str) -> str:
    user: dict[str, Any] = {"name": settings["user"], "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                            "groups": ["sudo"], "lock_passwd": settings.get("password_hash") is None}
    if settings.get("password_hash"):
        user["passwd"] = settings["password_hash"]
    if settings.get("ssh_keys"):
        user["ssh_authorized_keys"] = list(settings["ssh_keys"])
    config = {"hostname": hostname, "fqdn": hostname, "preserve_hostname": False, "users": [user],
              "ssh_pwauth": bool(settings.get("password_hash"))}
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def seed_argvs(seed: str, meta_path: str, user_path: str) -> list[list[str]]:
    """Commands that build the seed image at `seed` from the two files (mkfs.vfat, mcopy)."""
    return [["mkfs.vfat", "-C", "-n", SEED_LABEL, seed, str(SEED_KIB)],
            ["mcopy", "-i", seed, meta_path, "::meta-data"],
            ["mcopy", "-i", seed, user_path, "::user-data"]]


def hostname_for(settings: dict[str, Any], vm_name: str, source_name: str | None = None) -> str:
    """The guest's host name: the one set, unless it was the source VM's own name (a clone then
    takes its own), else the VM's name."""
    hostname = settings.get("hostname")
    if not hostname or (source_name is not None and hostname == source_name):
        return vm_name
    return hostname
