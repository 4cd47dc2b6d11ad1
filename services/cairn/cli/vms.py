"""cairnctl commands for virtual machines.

    cairnctl vm list | show NAME
    cairnctl vm create NAME --pool P [--vcpus N] [--memory MIB] [--disk 20G ...] [--firmware uefi|bios]
                       [--iso IMAGE] [--bridge br0] [--autostart] [--description D] [--wait]
                       [--import IMAGE] [--user U] [--ssh-key FILE ...] [--password-stdin]   (cloud images)
    cairnctl vm set NAME [--vcpus N] [--memory MIB] [--iso IMAGE | --eject] [--description D]
                    [--autostart | --no-autostart] [--wait]      (vCPUs, memory, ISO: VM stopped)
    cairnctl vm start|poweroff|reboot|pause|resume NAME [--wait]
    cairnctl vm stop NAME [--timeout S] [--force] [--wait]        (ACPI shutdown; --force: power off
                                                                  when the guest does not stop in time)
    cairnctl vm delete NAME [--keep-disks] [--force] [--wait]
    cairnctl vm clone NAME (--count N [--base B] | --name N [--name N ...]) [--wait]
    cairnctl vm snapshot NAME [--name S] [--wait]
    cairnctl vm snapshots NAME
    cairnctl vm snapshot-delete NAME SNAP [--wait]
    cairnctl vm revert NAME SNAP [--wait]
    cairnctl vm restore NAME SNAP NEWNAME [--wait]

An IMAGE is an uploaded image, as POOL/FILE (cairnctl image list) or its path, or the path of a
file under a directory the node's config allows ([compute] image_dirs); the API refuses others.

A VM's state is what its node last reported, with the accelerator: "running (TCG)" means the node
has no KVM and emulates the CPU. Commands that start a job print it; with --wait they follow it to
the end and exit 1 if it failed (cli/storage.py's finish).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cairn.cli.output import show, table
from cairn.cli.storage import finish, human

RUNNING = {"running", "paused", "blocked", "pmsuspended"}
VM_COLUMNS = [("NAME", "name"), ("NODE", "node"), ("POOL", "pool"), ("STATE", "state"), ("VCPUS", "vcpus"),
              ("MEMORY", "memory"), ("DISKS", "disks"), ("ORIGIN", "origin")]
SNAPSHOT_COLUMNS = [("SNAPSHOT", "name")]


# --- rendering (pure) -------------------------------------------------------------------------
def state(status: dict[str, Any] | None) -> str:
    """'running (TCG)', 'shutoff', or '-' before the node reported."""
    if not status or not status.get("state"):
        return "-"
    if status["state"] in RUNNING and status.get("accel"):
        return f"{status['state']} ({status['accel'].upper()})"
    return status["state"]


def origin(vm: dict[str, Any]) -> str:
    source = vm.get("origin") or {}
    if source.get("clone_of"):
        return f"clone of {source['clone_of']}"
    if source.get("restored_from"):
        return f"restored from {source['restored_from']}"
    return "-"


def vm_rows(vms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": vm["name"], "node": vm["node"], "pool": vm["pool"], "state": state(vm.get("status")),
             "vcpus": vm["vcpus"], "memory": f"{vm['memory_mib']} MiB",
             "disks": ",".join(human(d["size"]) for d in vm.get("disks", [])) or "-", "origin": origin(vm)}
            for vm in vms]


def render_vm(vm: dict[str, Any]) -> str:
    status = vm.get("status") or {}
    lines = [f"vm {vm['name']} on {vm['node']} (pool {vm['pool']}): {state(vm.get('status'))}",
             f"  {vm['vcpus']} vCPUs ({vm['cpu_model']}), {vm['memory_mib']} MiB, firmware {vm['firmware']}, "
             f"accelerator {(status.get('accel') or '-').upper()}, autostart {'yes' if vm.get('autostart') else 'no'}"]
    for disk in vm.get("disks", []):
        lines.append(f"  {disk['name']}: {human(disk['size'])}")
    for nic in vm.get("nics", []):
        lines.append(f"  nic {nic['mac']} on {nic['bridge']}")
    if vm.get("cdrom"):
        lines.append(f"  iso: {vm['cdrom']}")
    if status.get("vnc_port"):
        lines.append(f"  vnc: {vm['node']}:{status['vnc_port']}")
    if origin(vm) != "-":
        lines.append(f"  origin: {origin(vm)}")
    lines.append(f"  snapshots: {', '.join(status.get('snapshots') or []) or 'none'}")
    lines.append(f"  uuid: {vm['uuid']}")
    return "\n".join(lines)


# --- commands ---------------------------------------------------------------------------------
def cmd_list(client, args) -> int:
    show(client.call("GET", "/vms")["vms"], args.json, lambda rows: table(vm_rows(rows), VM_COLUMNS))
    return 0


def cmd_show(client, args) -> int:
    show(client.call("GET", f"/vms/{args.name}"), args.json, render_vm)
    return 0


def image_path(client, value: str | None) -> str | None:
    """An --iso/--import value as the API takes it: POOL/FILE names an uploaded image (its path is
    asked for), anything absolute is sent as it is."""
    if value is None or value.startswith("/"):
        return value
    pool, _, name = value.partition("/")
    if not pool or not name or "/" in name:
        raise ValueError(f"{value!r}: give an uploaded image as POOL/FILE (cairnctl image list) or an absolute path")
    return client.call("GET", f"/images/{quote(pool, safe='')}/{quote(name, safe='')}")["path"]


def cmd_create(client, args) -> int:
    body: dict[str, Any] = {"name": args.name, "pool": args.pool, "firmware": args.firmware,
                            "nics": [{"bridge": args.bridge}], "autostart": args.autostart}
    for key, value in (("vcpus", args.vcpus), ("memory_mib", args.memory), ("cdrom", image_path(client, args.iso)),
                       ("description", args.description)):
        if value is not None:
            body[key] = value
    if args.disk:
        body["disks"] = [{"size": size} for size in args.disk]
    if args.image:       # the first disk is made from the image (its --disk size, if given, at least)
        first = {"import": image_path(client, args.image), **({"size": args.disk[0]} if args.disk else {})}
        body["disks"] = [first] + [{"size": size} for size in (args.disk or [])[1:]]
    if args.user or args.ssh_key or args.password_stdin:
        cloud: dict[str, Any] = {"user": args.user or "cairn"}
        if args.ssh_key:
            cloud["ssh_keys"] = [Path(path).read_text().strip() for path in args.ssh_key]
        if args.password_stdin:
            cloud["password"] = sys.stdin.readline().rstrip("\n")
        body["cloud_init"] = cloud
    return finish(client, args, client.call("POST", "/vms", body))


def cmd_set(client, args) -> int:
    body: dict[str, Any] = {}
    for key, value in (("vcpus", args.vcpus), ("memory_mib", args.memory), ("description", args.description),
                       ("autostart", args.autostart), ("cdrom", image_path(client, args.iso))):
        if value is not None:
            body[key] = value
    if args.eject:
        body["cdrom"] = None
    if not body:
        raise ValueError("nothing to change: give --vcpus, --memory, --iso/--eject, --description or --autostart")
    return finish(client, args, client.call("PATCH", f"/vms/{args.name}", body))


def cmd_action(client, args) -> int:
    body: dict[str, Any] = {}
    if args.action == "stop":
        if args.timeout is not None:
            body["timeout"] = args.timeout
        body["force"] = args.force
    return finish(client, args, client.call("POST", f"/vms/{args.name}/actions/{args.action}", body))


def cmd_delete(client, args) -> int:
    params = {"keep_disks": "true" if args.keep_disks else "false", "force": "true" if args.force else "false"}
    return finish(client, args, client.call("DELETE", f"/vms/{args.name}", params=params))


def cmd_clone(client, args) -> int:
    if args.names:
        if args.base:
            raise ValueError("--base numbers the clones of --count; it does not go with --name")
        body: dict[str, Any] = {"names": args.names}
    else:
        body = {"count": args.count}
        if args.base:
            body["base"] = args.base
    return finish(client, args, client.call("POST", f"/vms/{args.name}/clones", body))


def cmd_snapshot(client, args) -> int:
    body = {"name": args.snapshot_name} if args.snapshot_name else {}
    return finish(client, args, client.call("POST", f"/vms/{args.name}/snapshots", body))


def cmd_snapshots(client, args) -> int:
    show(client.call("GET", f"/vms/{args.name}/snapshots")["snapshots"], args.json,
         lambda names: table([{"name": n} for n in names], SNAPSHOT_COLUMNS))
    return 0


def cmd_snapshot_delete(client, args) -> int:
    return finish(client, args, client.call("DELETE", f"/vms/{args.name}/snapshots/{args.snapshot}"))


def cmd_revert(client, args) -> int:
    return finish(client, args, client.call("POST", f"/vms/{args.name}/snapshots/{args.snapshot}/revert"))


def cmd_restore(client, args) -> int:
    return finish(client, args, client.call("POST", f"/vms/{args.name}/snapshots/{args.snapshot}/restore",
                                            {"name": args.new}))


def add_parsers(sub) -> None:
    def waiting(parser):
        parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
        return parser

    vm = sub.add_parser("vm", help="virtual machines").add_subparsers(dest="action", required=True)
    vm.add_parser("list", help="VMs with their state").set_defaults(func=cmd_list)
    vm_show = vm.add_parser("show", help="one VM with its settings and snapshots")
    vm_show.add_argument("name")
    vm_show.set_defaults(func=cmd_show)

    create = waiting(vm.add_parser("create", help="create a VM on a pool (it runs on the pool's node)"))
    create.add_argument("name")
    create.add_argument("--pool", required=True)
    create.add_argument("--vcpus", type=int, help="virtual CPUs (default 1)")
    create.add_argument("--memory", type=int, metavar="MIB", help="memory in MiB (default 1024)")
    create.add_argument("--disk", action="append", metavar="SIZE", help="a disk, e.g. 20G; repeat for each "
                                                                         "(default one of 20G)")
    create.add_argument("--firmware", choices=("uefi", "bios"), default="uefi")
    create.add_argument("--iso", metavar="IMAGE", help="an ISO to boot from: an uploaded one as POOL/FILE, or a path "
                                                      "the node allows ([compute] image_dirs)")
    create.add_argument("--bridge", default="br0", help="the node's bridge for the NIC (default br0)")
    create.add_argument("--autostart", action="store_true", help="start the VM when its node boots")
    create.add_argument("--description")
    create.add_argument("--import", dest="image", metavar="IMAGE",
                        help="make the first disk from this disk image (raw, qcow2, vmdk, vdi, vhdx, vhd): an "
                             "uploaded one as POOL/FILE, or a path the node allows ([compute] image_dirs)")
    create.add_argument("--user", help="cloud-init: the guest user to create (cloud images)")
    create.add_argument("--ssh-key", action="append", metavar="FILE", help="cloud-init: an OpenSSH public key file")
    create.add_argument("--password-stdin", action="store_true", help="cloud-init: the user's password, from stdin")
    edit = waiting(vm.add_parser("set", help="change a VM's settings (vCPUs, memory, ISO: VM stopped)"))
    edit.add_argument("name")
    edit.add_argument("--vcpus", type=int)
    edit.add_argument("--memory", type=int, metavar="MIB")
    edit.add_argument("--description")
    media = edit.add_mutually_exclusive_group()
    media.add_argument("--iso", metavar="IMAGE", help="attach this ISO: an uploaded one as POOL/FILE, or a path "
                                                     "the node allows")
    media.add_argument("--eject", action="store_true", help="remove the ISO image")
    start = edit.add_mutually_exclusive_group()
    start.add_argument("--autostart", dest="autostart", action="store_true", default=None)
    start.add_argument("--no-autostart", dest="autostart", action="store_false")
    edit.set_defaults(func=cmd_set)
    create.set_defaults(func=cmd_create)

    for action, text in (("start", "start a VM"), ("stop", "shut a VM down (ACPI)"),
                         ("poweroff", "power a VM off at once"), ("reboot", "reboot a VM"),
                         ("pause", "pause a VM"), ("resume", "resume a paused VM")):
        command = waiting(vm.add_parser(action, help=text))
        command.add_argument("name")
        if action == "stop":
            command.add_argument("--timeout", type=int, help="seconds to wait for the guest (default 120)")
            command.add_argument("--force", action="store_true", help="power off if it has not stopped by then")
        command.set_defaults(func=cmd_action)

    delete = waiting(vm.add_parser("delete", help="delete a VM with its disks and snapshots"))
    delete.add_argument("name")
    delete.add_argument("--keep-disks", action="store_true", help="keep the disks (in <pool>/vms/.kept/)")
    delete.add_argument("--force", action="store_true", help="power the VM off first if it is running")
    delete.set_defaults(func=cmd_delete)

    clone = waiting(vm.add_parser("clone", help="clone a stopped VM (reflink copies: new names, MACs, UUIDs)"))
    clone.add_argument("name")
    how = clone.add_mutually_exclusive_group(required=True)
    how.add_argument("--count", type=int, help="this many clones, named <base>-1, <base>-2, ...")
    how.add_argument("--name", dest="names", action="append", help="name of a clone; repeat for each")
    clone.add_argument("--base", help="base of the numbered names (default: the VM's name)")
    clone.set_defaults(func=cmd_clone)

    snapshot = waiting(vm.add_parser("snapshot", help="snapshot a VM's disks and definition"))
    snapshot.add_argument("name")
    snapshot.add_argument("--name", dest="snapshot_name", help="snapshot name (default: the UTC time)")
    snapshot.set_defaults(func=cmd_snapshot)
    snapshots = vm.add_parser("snapshots", help="a VM's snapshots")
    snapshots.add_argument("name")
    snapshots.set_defaults(func=cmd_snapshots)
    for action, func, text in (("snapshot-delete", cmd_snapshot_delete, "delete a snapshot of a VM"),
                               ("revert", cmd_revert, "put a stopped VM's disks back as in a snapshot"),
                               ("restore", cmd_restore, "restore a snapshot as a new VM")):
        command = waiting(vm.add_parser(action, help=text))
        command.add_argument("name")
        command.add_argument("snapshot")
        if action == "restore":
            command.add_argument("new", help="name of the new VM")
        command.set_defaults(func=func)
