"""A test client for the VM console's WebSocket: opens wss://<node>/api/v1/vms/<vm>/vnc with a bearer
token and speaks enough RFB (3.8, security type None) to get the ServerInit: the screen's size and
name, as QEMU's VNC server sends them. The handshake request is written out here (so tests can leave
out the token or send a foreign Origin) and the frames are wsproto's client side: nothing is shared
with the relay's own code, so a broken relay cannot hide behind it."""

from __future__ import annotations

import base64
import os
import re
import socket
import ssl
import struct
from urllib.parse import urlsplit

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection
from wsproto.utilities import LocalProtocolError, generate_accept_token


class Console:
    def __init__(self, url: str, path: str, token: str | None, ca: str | None = None,
                 origin: str | None = None) -> None:
        parts = urlsplit(url)
        context = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
        if not ca:
            context.check_hostname = False
        raw = socket.create_connection((parts.hostname, parts.port or 443), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname=parts.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: binary"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if origin:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        head, _, self.rest = head.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head.decode(errors="replace")
        length = re.search(r"(?im)^content-length:\s*(\d+)", self.head)
        if self.status != 101 and length:
            while len(self.rest) < int(length.group(1)):
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                self.rest += chunk
        self.body = self.rest.decode(errors="replace")
        if self.status == 101:
            assert f"Sec-WebSocket-Accept: {generate_accept_token(key.encode()).decode()}" in self.head, self.head
        self.connection = Connection(ConnectionType.CLIENT)
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.connection.send(BytesMessage(data)))

    def recv_exact(self, count: int) -> bytes:
        """count bytes of the RFB stream (frames joined)."""
        pending = self.rest
        self.rest = b""
        while len(self.buffer) < count:
            data = pending or self.sock.recv(65536)
            pending = b""
            if not data:
                raise ConnectionError(f"the console closed after {len(self.buffer)} of {count} bytes")
            self.connection.receive_data(data)
            for event in self.connection.events():
                if isinstance(event, CloseConnection):
                    raise ConnectionError(f"the console sent close {event.code} {event.reason!r}")
                if isinstance(event, BytesMessage):
                    self.buffer += event.data
        out = bytes(self.buffer[:count])
        del self.buffer[:count]
        return out

    def rfb_init(self) -> tuple[int, int, str]:
        """RFB 3.8 handshake with security None; returns (width, height, desktop name)."""
        version = self.recv_exact(12)
        assert version.startswith(b"RFB 003."), version
        self.send(b"RFB 003.008\n")
        count = self.recv_exact(1)[0]
        assert count > 0, "the VNC server refused the connection"
        types = self.recv_exact(count)
        assert 1 in types, f"security types {list(types)}: None (1) not offered"
        self.send(b"\x01")
        assert struct.unpack("!I", self.recv_exact(4))[0] == 0, "security handshake failed"
        self.send(b"\x01")                                   # ClientInit: shared
        width, height = struct.unpack("!HH", self.recv_exact(4))
        self.recv_exact(16)                                  # pixel format
        name_length = struct.unpack("!I", self.recv_exact(4))[0]
        return width, height, self.recv_exact(name_length).decode(errors="replace")

    def close(self) -> None:
        try:
            self.sock.sendall(self.connection.send(CloseConnection(1000)))
        except (OSError, LocalProtocolError):      # already closed, by either side
            pass
        self.sock.close()
