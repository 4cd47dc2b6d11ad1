"""A minimal QMP (QEMU Machine Protocol) client over a unix socket: stdlib only.

One connection per call site; not thread-safe. Events that arrive while waiting for a command's
reply are kept in ``events`` so callers can look for e.g. SHUTDOWN.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path


class QMPError(RuntimeError):
    pass


class QMP:
    def __init__(self, path: Path, timeout: float = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> "QMP":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(self.timeout)
                self.sock.connect(str(self.path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QMPError(f"QMP socket {self.path} does not answer")
                time.sleep(0.2)
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None

    def _read(self) -> dict:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QMPError("QMP connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def next_event(self) -> dict | None:
        """The next asynchronous event (waiting as long as it takes), or None once QEMU is gone."""
        if self.events:
            return self.events.pop(0)
        while True:
            try:
                message = self._read()
            except socket.timeout:
                continue
            except (QMPError, OSError):
                return None
            if "event" in message:
                return message

    def execute(self, command: str, **arguments) -> object:
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")
