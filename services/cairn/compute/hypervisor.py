"""libvirt, as Cairn uses it: one connection per agent, domains by name, errors turned into
Cairn's (a missing domain is NotFound, anything else CommandFailed-like ExecutionError naming the
call). libvirt-python is imported lazily: Debian's python3-libvirt in the appliance, the pip wheel
in the test venv; modules that only build XML never need it.

Who writes what: only the agent of the VM's node defines, starts and stops its domain.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cairn.errors import ExecutionError, NotFound

# virDomainState values, as words (libvirt.VIR_DOMAIN_*).
STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff",
          6: "crashed", 7: "pmsuspended"}


def _ignore(_context, _error) -> None:
    """libvirt prints every error on stderr by default; Cairn reports them itself."""


def _libvirt():
    import libvirt                     # noqa: PLC0415 (see the module docstring)
    libvirt.registerErrorHandler(_ignore, None)
    return libvirt


class Hypervisor:
    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._conn = None
        self._lock = threading.Lock()

    @property
    def libvirt(self):
        return _libvirt()

    def conn(self):
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                try:
                    self._conn = self.libvirt.open(self.uri)
                except self.libvirt.libvirtError as exc:
                    raise ExecutionError(f"cannot reach libvirt at {self.uri}: {exc.get_error_message()}") from None
            return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None

    def _domain(self, name: str):
        try:
            return self.conn().lookupByName(name)
        except self.libvirt.libvirtError as exc:
            if exc.get_error_code() == self.libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"libvirt has no domain {name!r}", vm=name) from None
            raise ExecutionError(f"libvirt lookup of {name}: {exc.get_error_message()}") from None

    def _call(self, what: str, function, *args) -> Any:
        try:
            return function(*args)
        except self.libvirt.libvirtError as exc:
            raise ExecutionError(f"{what}: {exc.get_error_message()}") from None

    # --- definitions ---------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        self._call("defining the domain", self.conn().defineXML, xml)

    def undefine(self, name: str) -> None:
        """Forget the domain (and its NVRAM reference; the file itself lives with the VM)."""
        try:
            domain = self._domain(name)
        except NotFound:
            return
        flags = self.libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | self.libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE \
            | self.libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        self._call(f"undefining {name}", domain.undefineFlags, flags)

    def exists(self, name: str) -> bool:
        try:
            self._domain(name)
            return True
        except NotFound:
            return False

    def names(self) -> list[str]:
        return sorted(d.name() for d in self._call("listing domains", self.conn().listAllDomains, 0))

    def xml(self, name: str, inactive: bool = False) -> str:
        flags = self.libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return self._call(f"reading {name}'s definition", self._domain(name).XMLDesc, flags)

    # --- lifecycle -----------------------------------------------------------------------------
    def state(self, name: str) -> str:
        state, _reason = self._call(f"reading {name}'s state", self._domain(name).state)
        return STATES.get(state, "nostate")

    def start(self, name: str) -> None:
        self._call(f"starting {name}", self._domain(name).create)

    def shutdown(self, name: str) -> None:
        """Ask the guest to shut down (ACPI power button)."""
        self._call(f"shutting {name} down", self._domain(name).shutdown)

    def poweroff(self, name: str) -> None:
        self._call(f"powering {name} off", self._domain(name).destroy)

    def reboot(self, name: str) -> None:
        self._call(f"rebooting {name}", self._domain(name).reboot, 0)

    def pause(self, name: str) -> None:
        self._call(f"pausing {name}", self._domain(name).suspend)

    def resume(self, name: str) -> None:
        self._call(f"resuming {name}", self._domain(name).resume)

    def set_autostart(self, name: str, flag: bool) -> None:
        self._call(f"setting {name}'s autostart", self._domain(name).setAutostart, 1 if flag else 0)

    def wait_state(self, name: str, wanted: set[str], timeout: float, should_stop=lambda: False) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(name)
            if state in wanted or time.monotonic() > deadline or should_stop():
                return state
            time.sleep(0.2)

    # --- guest agent ---------------------------------------------------------------------------
    def freeze(self, name: str) -> bool:
        """Quiesce the guest's filesystems through the QEMU guest agent; False if there is none
        (or it does not answer): the snapshot is then crash-consistent."""
        try:
            self._domain(name).fsFreeze(None, 0)
            return True
        except self.libvirt.libvirtError:
            return False

    def thaw(self, name: str) -> None:
        try:
            self._domain(name).fsThaw(None, 0)
        except self.libvirt.libvirtError:
            pass

    # --- the node ------------------------------------------------------------------------------
    def kvm_usable(self) -> bool:
        """Whether libvirt offers KVM domains on this node."""
        try:
            caps = self.conn().getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        except self.libvirt.libvirtError:
            return False
        return "<domain>kvm</domain>" in caps
