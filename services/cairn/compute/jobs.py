"""VM job kinds: each checks its params (pure), names its locks and runs on the VM's node through
compute.vms.Compute.

Locks: `vm:<name>` for the VM a job changes, plus `vm:<new name>` for every VM a clone or restore
makes (so two jobs never make the same VM), and `pool:<pool>` is not taken: VM jobs only add or
remove subvolumes under <pool>/vms, which pool jobs leave alone.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from cairn.compute import model
from cairn.compute.hypervisor import Hypervisor
from cairn.compute.vms import Compute, get_vm
from cairn.config import ComputeConfig, StorageConfig
from cairn.errors import ValidationError
from cairn.jobs.registry import job_kind

SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_CLONES = 100
_hypervisors: dict[str, Hypervisor] = {}
_guard = threading.Lock()


def hypervisor(uri: str) -> Hypervisor:
    """One libvirt connection per URI for the whole agent (jobs run in threads)."""
    with _guard:
        if uri not in _hypervisors:
            _hypervisors[uri] = Hypervisor(uri)
        return _hypervisors[uri]


_accels: dict[str, str] = {}


def resolve_accel(setting: str, hv: Hypervisor) -> str:
    """kvm or tcg; "auto" asks libvirt once per connection whether it offers KVM here."""
    if setting in ("kvm", "tcg"):
        return setting
    with _guard:
        if hv.uri not in _accels:
            _accels[hv.uri] = "kvm" if os.path.exists("/dev/kvm") and hv.kvm_usable() else "tcg"
        return _accels[hv.uri]


def backend(runner, store, node: str, config) -> Compute:
    settings = config.compute if config is not None else ComputeConfig()
    storage = config.storage if config is not None else StorageConfig()
    hv = hypervisor(settings.libvirt_uri)
    return Compute(runner, store, node, storage.pools_root, hv, resolve_accel(settings.accel, hv),
                   settings.log_dir)


def compute(ctx) -> Compute:
    return backend(ctx.runner, ctx.store, ctx.node, getattr(ctx, "config", None))


def _only(params: dict[str, Any], allowed: set[str], problems: dict[str, str]) -> None:
    for key in sorted(set(params) - allowed):
        problems[key] = "unknown parameter"


def _name(params: dict[str, Any], key: str, problems: dict[str, str]) -> str:
    value = params.get(key)
    problem = model.name_problem(value)
    if problem:
        problems[key] = problem
        return ""
    return value


def _bool(params: dict[str, Any], key: str, problems: dict[str, str], default: bool = False) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        problems[key] = "must be true or false"
        return default
    return value


def _snapshot(params: dict[str, Any], problems: dict[str, str]) -> str:
    value = params.get("snapshot")
    if not isinstance(value, str) or not SNAPSHOT_NAME.fullmatch(value):
        problems["snapshot"] = "snapshot name: 1-64 of letters, digits, '.', '_' and '-'"
        return ""
    return value


def check_vm(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm"}, problems)
    name = _name(params, "vm", problems)
    model.raise_problems(problems)
    return {"vm": name}


def check_stop(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm", "timeout", "force"}, problems)
    name = _name(params, "vm", problems)
    timeout = params.get("timeout", 120)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout <= 3600:
        problems["timeout"] = "seconds to wait for the guest, 0 to 3600"
    force = _bool(params, "force", problems)
    model.raise_problems(problems)
    return {"vm": name, "timeout": timeout, "force": force}


def check_delete(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm", "keep_disks", "force"}, problems)
    name = _name(params, "vm", problems)
    keep = _bool(params, "keep_disks", problems)
    force = _bool(params, "force", problems)
    model.raise_problems(problems)
    return {"vm": name, "keep_disks": keep, "force": force}


def check_clone(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm", "names"}, problems)
    name = _name(params, "vm", problems)
    names = params.get("names")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_CLONES:
        problems["names"] = f"must be a list of 1 to {MAX_CLONES} new VM names"
        names = []
    for index, new in enumerate(names):
        problem = model.name_problem(new)
        if problem:
            problems[f"names[{index}]"] = problem
    texts = [new for new in names if isinstance(new, str)]      # (a list or an object is no set member)
    if len(set(texts)) != len(texts):
        problems["names"] = "names a VM twice"
    model.raise_problems(problems)
    return {"vm": name, "names": list(names)}


def check_snapshot(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm", "snapshot"}, problems)
    name = _name(params, "vm", problems)
    snapshot = _snapshot(params, problems)
    model.raise_problems(problems)
    return {"vm": name, "snapshot": snapshot}


def check_restore(params: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    _only(params, {"vm", "snapshot", "name"}, problems)
    name = _name(params, "vm", problems)
    snapshot = _snapshot(params, problems)
    new = _name(params, "name", problems)
    model.raise_problems(problems)
    return {"vm": name, "snapshot": snapshot, "name": new}


def vm_lock(node: str, params: dict[str, Any]) -> list[str]:
    return [f"vm:{params['vm']}"]


def progress_of(ctx):
    return lambda fraction, message: ctx.progress(int(fraction * 100), message)


def should_stop(ctx):
    def check() -> bool:
        try:
            ctx.check_abort()
            return False
        except Exception:
            return True
    return check


def check_sources_here(ctx, vm) -> None:
    """The VM's disk images and ISO checked again on its own node, where symlinks resolve: the
    API of another node could only check their names (compute.images.source_problem)."""
    from cairn.compute.service import VmService
    from cairn.jobs.service import JobService
    config = getattr(ctx, "config", None)
    image_dirs = config.compute.image_dirs if config is not None else ()
    problem = VmService(ctx.store, JobService(ctx.store), local_node=ctx.node,
                        image_dirs=image_dirs).image_checker(ctx.node)
    problems = {}
    for index, disk in enumerate(vm.disks):
        if disk.imported_from:
            found = problem(disk.imported_from, "disk")
            if found:
                problems[f"disks[{index}].import"] = found
    if vm.cdrom:
        found = problem(vm.cdrom, "iso")
        if found:
            problems["cdrom"] = found
    if problems:
        raise ValidationError(problems)


@job_kind("vm.create", title="Create VM {vm} on {node}", check_params=check_vm, locks=vm_lock)
def run_create(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    check_sources_here(ctx, vm)
    backend.create(vm, progress=progress_of(ctx))
    return {"vm": vm.name, "accel": backend.accel, "path": backend.vm_dir(vm)}


@job_kind("vm.redefine", title="Apply the new settings of VM {vm}", check_params=check_vm, locks=vm_lock)
def run_redefine(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    check_sources_here(ctx, vm)
    backend.redefine(vm)
    return {"vm": vm.name, "vcpus": vm.vcpus, "memory_mib": vm.memory_mib, "cdrom": vm.cdrom,
            "autostart": vm.autostart}


@job_kind("vm.start", title="Start VM {vm}", check_params=check_vm, locks=vm_lock)
def run_start(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    backend.start(vm)
    return {"vm": vm.name, "state": backend.publish_status(vm)["state"], "accel": backend.accel}


@job_kind("vm.stop", title="Shut VM {vm} down", check_params=check_stop, locks=vm_lock, abortable=True)
def run_stop(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    ctx.progress(10, "ACPI power button pressed; waiting for the guest")
    backend.stop(vm, params["timeout"], params["force"], should_stop(ctx))
    return {"vm": vm.name, "state": backend.publish_status(vm)["state"]}


@job_kind("vm.poweroff", title="Power VM {vm} off", check_params=check_vm, locks=vm_lock)
def run_poweroff(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    if backend.state(vm) != "shutoff":
        backend.hv.poweroff(vm.name)
    return {"vm": vm.name, "state": backend.publish_status(vm)["state"]}


def _simple(action: str):
    def run(ctx, params: dict[str, Any]) -> dict[str, Any]:
        backend = compute(ctx)
        vm = get_vm(ctx.store, params["vm"])
        getattr(backend.hv, action)(vm.name)
        return {"vm": vm.name, "state": backend.publish_status(vm)["state"]}
    return run


job_kind("vm.reboot", title="Reboot VM {vm}", check_params=check_vm, locks=vm_lock)(_simple("reboot"))
job_kind("vm.pause", title="Pause VM {vm}", check_params=check_vm, locks=vm_lock)(_simple("pause"))
job_kind("vm.resume", title="Resume VM {vm}", check_params=check_vm, locks=vm_lock)(_simple("resume"))


@job_kind("vm.delete", title="Delete VM {vm}", check_params=check_delete, locks=vm_lock)
def run_delete(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    kept = backend.delete(vm, params["keep_disks"], params["force"])
    return {"vm": vm.name, "kept_disks_at": kept}


@job_kind("vm.clone", title="Clone VM {vm}", check_params=check_clone, abortable=True,
          locks=lambda node, p: [f"vm:{p['vm']}"] + [f"vm:{n}" for n in p["names"]])
def run_clone(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    vm = get_vm(ctx.store, params["vm"])
    made = backend.clone(vm, params["names"], should_stop=should_stop(ctx), progress=progress_of(ctx))
    return {"vm": vm.name, "clones": [{"name": c.name, "macs": [n.mac for n in c.nics]} for c in made]}


@job_kind("vm.snapshot", title="Snapshot {snapshot} of VM {vm}", check_params=check_snapshot, locks=vm_lock)
def run_snapshot(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    return {"vm": params["vm"], **backend.snapshot(get_vm(ctx.store, params["vm"]), params["snapshot"])}


@job_kind("vm.snapshot-delete", title="Delete snapshot {snapshot} of VM {vm}", check_params=check_snapshot,
          locks=vm_lock)
def run_snapshot_delete(ctx, params: dict[str, Any]) -> dict[str, Any]:
    compute(ctx).delete_snapshot(get_vm(ctx.store, params["vm"]), params["snapshot"])
    return {"vm": params["vm"], "snapshot": params["snapshot"]}


@job_kind("vm.revert", title="Revert VM {vm} to snapshot {snapshot}", check_params=check_snapshot, locks=vm_lock)
def run_revert(ctx, params: dict[str, Any]) -> dict[str, Any]:
    compute(ctx).revert(get_vm(ctx.store, params["vm"]), params["snapshot"])
    return {"vm": params["vm"], "snapshot": params["snapshot"]}


@job_kind("vm.restore", title="Restore snapshot {snapshot} of VM {vm} as VM {name}", check_params=check_restore,
          locks=lambda node, p: [f"vm:{p['vm']}", f"vm:{p['name']}"])
def run_restore(ctx, params: dict[str, Any]) -> dict[str, Any]:
    backend = compute(ctx)
    made = backend.restore_as_new(get_vm(ctx.store, params["vm"]), params["snapshot"], params["name"])
    return {"vm": made.name, "restored_from": f"{params['vm']}@{params['snapshot']}",
            "macs": [n.mac for n in made.nics]}
