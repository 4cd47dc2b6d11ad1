"""A WebSocket (RFC 6455) end for the VM console: the browser's noVNC talks WebSocket to cairn-web,
which relays the bytes to the VM's VNC server on its node's loopback. So no VNC port is open to the
network, and the console's own login (session cookie or bearer token, checked by the app's gate)
guards every screen.

Pure parts (tested on their own): the handshake answer (`handshake`), frames out (`encode`) and a
frame reader that takes bytes as they come (`FrameReader`). `relay` is the side effect: one thread
moves bytes both ways with select(), so the TLS socket is never read and written from two threads
at once (OpenSSL does not allow that on one connection).

Rules: only version 13; the client's frames must be masked, the server's never are; a frame over
MAX_PAYLOAD is a protocol error (1009); pings are answered; a close frame is echoed, then both
sides are shut. noVNC asks for the "binary" subprotocol (older versions) or none: we answer with
"binary" when it is asked for.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import ssl
import struct
from dataclasses import dataclass, field

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = {CLOSE, PING, PONG}
MAX_PAYLOAD = 16 << 20
CHUNK = 64 << 10


class ProtocolError(Exception):
    """The peer broke RFC 6455; `code` is the close code to send."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def handshake(headers: dict[str, str]) -> tuple[bytes, str | None]:
    """The 101 answer to an upgrade request (header names lower-case) and the subprotocol chosen;
    ValueError saying what is wrong when it is no WebSocket upgrade this end can take."""
    if headers.get("upgrade", "").lower() != "websocket":
        raise ValueError("this URL is a WebSocket (send Upgrade: websocket)")
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise ValueError("a WebSocket request needs Connection: Upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise ValueError("only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise ValueError("Sec-WebSocket-Key must be 16 bytes in base64") from None
    offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    protocol = "binary" if "binary" in offered else None
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept_key(key)}"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), protocol


def encode(opcode: int, payload: bytes = b"", mask: bytes | None = None) -> bytes:
    """One final frame. Servers send unmasked frames; `mask` (4 bytes) is for clients (tests)."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    flag = 0x80 if mask else 0
    if length < 126:
        head += bytes([flag | length])
    elif length < 1 << 16:
        head += bytes([flag | 126]) + struct.pack("!H", length)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", length)
    if mask:
        return head + mask + _unmask(payload, mask)
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:120]


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    key = int.from_bytes((mask * (len(data) // 4 + 1))[:len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


@dataclass
class FrameReader:
    """Feed it bytes as they arrive; it gives back whole messages as (opcode, payload). Fragmented
    messages are joined; control frames may come between fragments."""
    require_mask: bool = True
    _buffer: bytearray = field(default_factory=bytearray)
    _parts: list[bytes] = field(default_factory=list)
    _opcode: int | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        messages = []
        while (frame := self._frame()) is not None:
            fin, opcode, payload = frame
            if opcode in CONTROL:
                if not fin or len(payload) > 125:
                    raise ProtocolError("control frames must be whole and at most 125 bytes")
                messages.append((opcode, payload))
                continue
            if opcode == CONTINUATION:
                if self._opcode is None:
                    raise ProtocolError("a continuation frame without a message to continue")
            elif opcode in (TEXT, BINARY):
                if self._opcode is not None:
                    raise ProtocolError("a new message began before the last one ended")
                self._opcode = opcode
            else:
                raise ProtocolError(f"unknown opcode {opcode:#x}")
            self._parts.append(payload)
            if sum(map(len, self._parts)) > MAX_PAYLOAD:
                raise ProtocolError("message too big", 1009)
            if fin:
                messages.append((self._opcode, b"".join(self._parts)))
                self._opcode, self._parts = None, []
        return messages

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        if buf[0] & 0x70:
            raise ProtocolError("reserved bits set (no extension was agreed)")
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, length = bool(buf[1] & 0x80), buf[1] & 0x7F
        if self.require_mask and not masked:
            raise ProtocolError("client frames must be masked")
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = struct.unpack("!Q", buf[2:10])[0], 10
        if length > MAX_PAYLOAD:
            raise ProtocolError("frame too big", 1009)
        mask = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            mask, offset = bytes(buf[offset:offset + 4]), offset + 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset:offset + length])
        del buf[:offset + length]
        return fin, opcode, (_unmask(payload, mask) if masked else payload)


def relay(client: socket.socket, target: socket.socket, idle_timeout: float = 3600.0) -> str:
    """Move bytes between a WebSocket client (handshake done) and a plain TCP target until either
    side closes; returns why it ended. Target bytes go out as binary frames."""
    reader = FrameReader()
    client.setblocking(True)
    target.setblocking(True)
    try:
        while True:
            pending = isinstance(client, ssl.SSLSocket) and client.pending() > 0
            if pending:
                ready = [client]
            else:
                ready, _, _ = select.select([client, target], [], [], idle_timeout)
                if not ready:
                    client.sendall(encode(CLOSE, close_payload(1001, "idle")))
                    return "idle"
            if target in ready:
                data = target.recv(CHUNK)
                if not data:
                    client.sendall(encode(CLOSE, close_payload(1000, "the VM's display closed")))
                    return "target closed"
                client.sendall(encode(BINARY, data))
            if client in ready:
                data = client.recv(CHUNK)
                if not data:
                    return "client went away"
                try:
                    messages = reader.feed(data)
                except ProtocolError as exc:
                    client.sendall(encode(CLOSE, close_payload(exc.code, str(exc))))
                    return f"protocol error: {exc}"
                for opcode, payload in messages:
                    if opcode in (BINARY, TEXT):
                        target.sendall(payload)
                    elif opcode == PING:
                        client.sendall(encode(PONG, payload))
                    elif opcode == CLOSE:
                        client.sendall(encode(CLOSE, payload[:2]))
                        return "client closed"
    except (OSError, ssl.SSLError) as exc:
        return f"connection lost: {exc}"
    finally:
        for sock in (target, client):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
