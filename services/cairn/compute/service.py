"""VMs as the API and the console ask for them: checked (model.py), written to the store, and
turned into jobs on the VM's node (jobs.py). This module never runs a command.

A new VM's record and its MAC claims are written in one transaction before its vm.create job is
queued; the job removes them again if the VM cannot be made. Lifecycle requests are jobs too, so
two requests on one VM run one after the other (lock vm:<name>). What the API reports as a VM's
state comes from vm-status/<name>, written by the VM node's agent.

A disk's import and the cdrom name only images a VM may use (compute/images.py): an uploaded image
of a pool of the VM's node, or a file under one of `image_dirs` (the [compute] image_dirs of this
node's config). When the VM is on this node, the file is also resolved (symlinks) and looked at
before anything is written; on another node, only its path is checked here.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from typing import Any, Sequence

from cairn.cluster import nodes
from cairn.cluster.store import Put, Store, absent
from cairn.compute import image_store, images, model
from cairn.compute.jobs import SNAPSHOT_NAME
from cairn.compute.vms import MACS, VM_STATUS, VMS, get_vm, inspect_image, list_vms
from cairn.errors import Conflict, NotFound, ValidationError
from cairn.jobs.service import JobService
from cairn.storage.pools import POOL_STATUS, get_pool

RUNNING = {"running", "paused", "blocked", "pmsuspended"}
LIFECYCLE = {"start": "vm.start", "stop": "vm.stop", "poweroff": "vm.poweroff", "reboot": "vm.reboot",
             "pause": "vm.pause", "resume": "vm.resume"}


class VmService:
    def __init__(self, store: Store, jobs: JobService, local_node: str | None = None, runner=None,
                 image_dirs: Sequence[str] = ()) -> None:
        self.store = store
        self.jobs = jobs
        self.local_node = local_node      # the node this process runs on: images there are checked at once
        self.runner = runner
        self.image_dirs = tuple(image_dirs)   # [compute] image_dirs: other places VM images may come from

    def image_checker(self, node: str) -> model.ImageProblem:
        """Why a VM on `node` may not use a path as an image (model.check_vm's image_problem)."""
        known = [images.KnownImage(image.path, image.kind, image.node, image.pool, image.name)
                 for image in (image_store.Image.from_dict(e.value) for e in self.store.list(image_store.IMAGES))]

        def problem(path: str, kind: str) -> str | None:
            found = images.source_problem(path, kind, node, known, self.image_dirs)
            if found or node != self.local_node:
                return found
            places = [posixpath.dirname(image.path) for image in known if image.path == path] or \
                [directory for directory in self.image_dirs if images.in_directory(path, directory)]
            return images.resolved_problem(path, places, os.path.realpath, os.stat)
        return problem

    def submit(self, kind: str, node: str, params: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.submit(kind, node, params).to_dict()

    # --- reading -----------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        return self.store.get(VM_STATUS + name) or {}

    def view(self, vm: model.Vm, statuses: dict[str, Any] | None = None,
             pools: dict[str, Any] | None = None) -> dict[str, Any]:
        """The VM with its observed status and space; `statuses` and `pools` (vm-status and
        pool-status records by name) when the caller read them for many VMs at once."""
        pool_status = pools.get(vm.pool) if pools is not None else self.store.get(POOL_STATUS + vm.pool)
        space = ((pool_status or {}).get("vms") or {}).get(vm.name)
        status = statuses.get(vm.name) if statuses is not None else self.store.get(VM_STATUS + vm.name)
        return {**vm.to_dict(), "status": status, "space": space}

    def vms(self) -> list[dict[str, Any]]:
        """Every VM: three reads of the store (records, statuses, pool statuses), however many VMs."""
        statuses = {e.key[len(VM_STATUS):]: e.value for e in self.store.list(VM_STATUS)}
        pools = {e.key[len(POOL_STATUS):]: e.value for e in self.store.list(POOL_STATUS)}
        return [self.view(vm, statuses, pools) for vm in sorted(list_vms(self.store), key=lambda v: v.name)]

    def vm(self, name: str) -> dict[str, Any]:
        return self.view(get_vm(self.store, name))

    def running(self, name: str) -> bool:
        return self.status(name).get("state") in RUNNING

    def capacity(self, node: str) -> model.Capacity:
        for record in nodes.list_nodes(self.store):
            if record["name"] == node:
                return model.Capacity(int(record.get("cpus") or 1), int(record.get("memory_total") or 0) >> 20)
        raise ValidationError({"node": f"no node named {node!r}"})

    # --- create ------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check, write the record with its MAC claims, queue vm.create on the pool's node."""
        if not isinstance(body, dict):
            raise ValidationError({"vm": "must be an object"})
        pool_name = body.get("pool")
        try:
            pool = get_pool(self.store, pool_name) if isinstance(pool_name, str) else None
        except NotFound:
            raise ValidationError({"pool": f"no pool named {pool_name!r}"}) from None
        node = pool.node if pool else (body.get("node") or "")
        if pool and body.get("node") not in (None, pool.node):
            raise ValidationError({"node": f"pool {pool.name} is on node {pool.node}: its VMs run there "
                                           "(for now: VMs run where their disks are)"})
        capacity = self.capacity(node) if pool else model.Capacity(1 << 10, 1 << 30)
        taken = [vm.name for vm in list_vms(self.store)]
        if isinstance(body.get("name"), str) and body["name"] in taken:
            raise Conflict(f"a VM named {body['name']!r} exists already", vm=body["name"])
        macs = [e.key[len(MACS):] for e in self.store.list(MACS)]
        vm = model.check_vm(body, node=node, capacity=capacity, taken_names=taken, taken_macs=macs,
                            new_uuid=lambda: str(uuid.uuid4()), random_bytes=os.urandom, now=time.time(),
                            hash_password=self.hash_password, image_problem=self.image_checker(node))
        if self.runner is not None and vm.node == self.local_node:
            # A file that is not a disk image is refused now (400); on another node, the job checks.
            for index, disk in enumerate(vm.disks):
                if disk.imported_from:
                    try:
                        info = inspect_image(self.runner, disk.imported_from)
                        images.disk_size(info, disk.size)
                    except ValidationError as exc:
                        raise ValidationError({f"disks[{index}].import": exc.fields["import"]}) from None
                    except ValueError as exc:
                        raise ValidationError({f"disks[{index}].size": str(exc)}) from None
        compares = [absent(VMS + vm.name)] + [absent(MACS + nic.mac) for nic in vm.nics]
        puts = [Put(VMS + vm.name, vm.to_dict())] + [Put(MACS + nic.mac, {"vm": vm.name}) for nic in vm.nics]
        if not self.store.txn(compares, puts):
            raise Conflict(f"VM name {vm.name!r} or one of its MAC addresses was taken meanwhile; try again")
        job = self.submit("vm.create", vm.node, {"vm": vm.name})
        return {"vm": self.view(vm), "job": job}

    def serial_log(self, name: str, log_dir: str, limit: int = 64 << 10) -> dict[str, Any]:
        """The end of the VM's serial console log (virtlogd writes it on the VM's node)."""
        vm = get_vm(self.store, name)
        if vm.node != self.local_node:
            raise Conflict(f"VM {name} runs on node {vm.node}: its serial log is read there", node=vm.node)
        path = f"{log_dir}/{name}.log"
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(size - limit, 0))
                data = handle.read()
        except FileNotFoundError:
            return {"vm": name, "size": 0, "text": ""}
        return {"vm": name, "size": size, "text": data.decode("utf-8", errors="replace")}

    def vnc_address(self, name: str) -> tuple[str, int]:
        """Where the VM's screen is served (VNC on its node's loopback), for the console's WebSocket
        relay; Conflict saying why when there is none to show."""
        vm = get_vm(self.store, name)
        if vm.node != self.local_node:
            raise Conflict(f"VM {name} runs on node {vm.node}: open its console from {vm.node}'s web console",
                           node=vm.node)
        status = self.status(name)
        if status.get("state") not in RUNNING:
            raise Conflict(f"VM {name} is {status.get('state') or 'not running'}: start it to see its screen")
        port = status.get("vnc_port")
        if not port:
            raise Conflict(f"VM {name} has no display yet: its node has not reported the VNC port; try again")
        return "127.0.0.1", int(port)

    def hash_password(self, password: str) -> str:
        """SHA-512 crypt of a guest password (cloud-init's passwd); the password itself is kept nowhere."""
        if self.runner is None:
            raise ValidationError({"cloud_init.password": "passwords can only be set through the API"})
        return self.runner.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n").stdout.strip()

    # --- edit --------------------------------------------------------------------------------------
    EDITABLE = {"vcpus", "memory_mib", "description", "autostart", "cdrom"}
    NEEDS_STOP = {"vcpus", "memory_mib", "cdrom"}

    def update(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change a VM's settings; vCPUs, memory and the cdrom only while it is stopped. The record
        is changed in a compare-and-swap, then vm.redefine gives libvirt the new definition."""
        entry = self.store.get_entry(VMS + name)
        if entry is None:
            raise NotFound(f"no VM named {name!r}", vm=name)
        vm = model.Vm.from_dict(entry.value)
        if not isinstance(body, dict) or not body:
            raise ValidationError({"vm": f"give one or more of {', '.join(sorted(self.EDITABLE))}"})
        problems: dict[str, str] = {}
        for key in sorted(set(body) - self.EDITABLE):
            problems[key] = ("fixed for the VM's life" if key in model.Vm.__dataclass_fields__
                             else "unknown setting")
        model.raise_problems(problems)
        touched = sorted(self.NEEDS_STOP & set(body))
        if touched and self.running(name):
            raise Conflict(f"VM {name} is running: shut it down to change {', '.join(touched)}")
        changes = model.check_edit(body, self.capacity(vm.node), vm.node, self.image_checker(vm.node))
        updated = model.Vm.from_dict({**vm.to_dict(), **changes})
        if not self.store.cas(VMS + name, updated.to_dict(), entry.mod_revision):
            raise Conflict(f"VM {name} changed meanwhile; try again")
        return self.submit("vm.redefine", vm.node, {"vm": name})

    # --- lifecycle -----------------------------------------------------------------------------
    def action(self, name: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        vm = get_vm(self.store, name)
        kind = LIFECYCLE.get(action)
        if kind is None:
            raise ValidationError({"action": f"must be one of {', '.join(sorted(LIFECYCLE))}"})
        params: dict[str, Any] = {"vm": name}
        if action == "stop":
            body = body or {}
            params.update({key: body[key] for key in ("timeout", "force") if key in body})
        return self.submit(kind, vm.node, params)

    def delete(self, name: str, keep_disks: bool = False, force: bool = False) -> dict[str, Any]:
        vm = get_vm(self.store, name)
        if self.running(name) and not force:
            raise Conflict(f"VM {name} is running: shut it down first, or delete with force=true")
        return self.submit("vm.delete", vm.node, {"vm": name, "keep_disks": keep_disks, "force": force})

    # --- clones, snapshots, restores -------------------------------------------------------------
    def clone(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        vm = get_vm(self.store, name)
        if self.running(name):
            raise Conflict(f"VM {name} is running: a running VM is cloned from one of its snapshots "
                           "(take a snapshot, then restore it as a new VM), or shut it down first")
        taken = {v.name for v in list_vms(self.store)}
        names = body.get("names")
        count = body.get("count")
        if names is None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
                raise ValidationError({"count": "give names, or a count from 1 to 100"})
            base = name if body.get("base") is None else body["base"]
            if not isinstance(base, str) or not base:
                raise ValidationError({"base": "must be the start of a VM name, like web"})
            names = model.clone_names(base, count, taken)
        texts = [new for new in names if isinstance(new, str)] if isinstance(names, list) else []
        clash = sorted(taken.intersection(texts))           # (the job's check names what is not a name)
        if clash:
            raise Conflict(f"VM names taken already: {', '.join(clash)}", names=clash)
        return self.submit("vm.clone", vm.node, {"vm": name, "names": names})

    def snapshot(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        vm = get_vm(self.store, name)
        snapshot = body.get("name")
        if snapshot is None:        # not given (false or "" is a bad name, not "not given")
            snapshot = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if not isinstance(snapshot, str) or not SNAPSHOT_NAME.fullmatch(snapshot):
            raise ValidationError({"name": "snapshot name: 1-64 of letters, digits, '.', '_' and '-'"})
        if snapshot in (self.status(name).get("snapshots") or []):
            raise Conflict(f"VM {name} has a snapshot named {snapshot!r} already")
        return self.submit("vm.snapshot", vm.node, {"vm": name, "snapshot": snapshot})

    @staticmethod
    def _snapshot_name(snapshot: Any) -> str:
        """A snapshot named in a request path: checked like a new one's name (a '$' would let "x\n" by)."""
        if not isinstance(snapshot, str) or not SNAPSHOT_NAME.fullmatch(snapshot):
            raise ValidationError({"snapshot": "snapshot name: 1-64 of letters, digits, '.', '_' and '-'"})
        return snapshot

    def delete_snapshot(self, name: str, snapshot: str) -> dict[str, Any]:
        snapshot = self._snapshot_name(snapshot)
        vm = get_vm(self.store, name)
        return self.submit("vm.snapshot-delete", vm.node, {"vm": name, "snapshot": snapshot})

    def revert(self, name: str, snapshot: str) -> dict[str, Any]:
        snapshot = self._snapshot_name(snapshot)
        vm = get_vm(self.store, name)
        if self.running(name):
            raise Conflict(f"VM {name} is running: shut it down before reverting it")
        return self.submit("vm.revert", vm.node, {"vm": name, "snapshot": snapshot})

    def restore(self, name: str, snapshot: str, body: dict[str, Any]) -> dict[str, Any]:
        snapshot = self._snapshot_name(snapshot)
        vm = get_vm(self.store, name)
        new = body.get("name")
        problem = model.name_problem(new, [v.name for v in list_vms(self.store)])
        if problem:
            if isinstance(new, str) and "exists already" in problem:
                raise Conflict(problem, vm=new)
            raise ValidationError({"name": problem})
        return self.submit("vm.restore", vm.node, {"vm": name, "snapshot": snapshot, "name": new})
