"""A WebSocket end for the VM console: the browser's noVNC talks WebSocket to cairn-web, which
relays the bytes to the VM's VNC server on its node's loopback. So no VNC port is open to the
network, and the console's own login (session cookie or bearer token, checked by the app's gate)
guards every screen.

RFC 6455 itself is wsproto's (a kept implementation, packaged by Debian as python3-wsproto): the
101 answer (H11Handshake, from the request gunicorn has already parsed), framing, masking, control
frames and the close handshake (Connection). What is ours:
- `upgrade_problem` (pure): why a request is no upgrade this end takes, in words a person can act
  on (the API answers it as a 400 naming the header);
- `accept` (pure): the 101 answer, the wsproto connection and the subprotocol: noVNC asks for
  "binary" (older versions) or none, and gets "binary" when it asks;
- `relay`, the side effect: one loop moves bytes both ways with select(), so the TLS socket is
  never read and written by two tasks at once (OpenSSL does not allow that on one connection).
  Under gunicorn's gevent worker select() is gevent's: an open console is a waiting greenlet, not
  a worker thread. Binary and text messages go to the VM as bytes, as they arrive; pings are
  answered; a close is echoed; a frame that breaks the protocol is answered with the close code
  wsproto gives (1002 for an unmasked client frame) and ends the relay; the VM's display going away
  closes the browser's side with 1000.
"""

from __future__ import annotations

import base64
import binascii
import select
import socket

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Request, TextMessage)
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError

CHUNK = 64 << 10
IDLE_SECONDS = 3600.0


def upgrade_problem(headers: dict[str, str]) -> str | None:
    """What is wrong with an upgrade request (header names lower-case), or None (pure)."""
    if headers.get("upgrade", "").strip().lower() != "websocket":
        return "this URL is a WebSocket (send Upgrade: websocket)"
    if "upgrade" not in [token.strip().lower() for token in headers.get("connection", "").split(",")]:
        return "a WebSocket request needs Connection: Upgrade"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return "only WebSocket version 13 is spoken (Sec-WebSocket-Version: 13)"
    try:
        if len(base64.b64decode(headers.get("sec-websocket-key", "").strip(), validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


def accept(headers: list[tuple[str, str]], target: str) -> tuple[bytes, Connection, str | None]:
    """For an upgrade request already parsed by the server (its headers in order, its target): the
    101 answer to send, the wsproto connection for the frames that follow, and the subprotocol
    chosen. ValueError saying what is wrong when it is no WebSocket upgrade this end takes."""
    problem = upgrade_problem({name.lower(): value for name, value in headers})
    if problem:
        raise ValueError(problem)
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(
            [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers], target)
        (request,) = [event for event in handshake.events() if isinstance(event, Request)]
    except (ProtocolError, ValueError) as exc:
        raise ValueError(f"not a WebSocket upgrade: {exc}") from None
    protocol = "binary" if "binary" in request.subprotocols else None
    answer = handshake.send(AcceptConnection(subprotocol=protocol))
    return answer, handshake.connection, protocol


def relay(client: socket.socket, target: socket.socket, connection: Connection,
          idle_timeout: float = IDLE_SECONDS) -> str:
    """Move bytes between a WebSocket client (its 101 sent; `connection` frames its bytes) and a
    plain TCP target until either side closes or nothing moves for `idle_timeout` seconds; returns
    why it ended. Both sockets are shut down at the end."""
    client.setblocking(True)
    target.setblocking(True)
    try:
        while True:
            pending = getattr(client, "pending", None)     # TLS: bytes already decrypted, select() can't see them
            if pending is not None and pending() > 0:
                ready = [client]
            else:
                ready, _, _ = select.select([client, target], [], [], idle_timeout)
                if not ready:
                    client.sendall(connection.send(CloseConnection(1001, "idle")))
                    return "idle"
            if target in ready:
                data = target.recv(CHUNK)
                if not data:
                    client.sendall(connection.send(CloseConnection(1000, "the VM's display closed")))
                    return "target closed"
                client.sendall(connection.send(BytesMessage(data)))
            if client in ready:
                data = client.recv(CHUNK)
                if not data:
                    return "client went away"
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, BytesMessage):
                        target.sendall(event.data)
                    elif isinstance(event, TextMessage):
                        target.sendall(event.data.encode())
                    elif isinstance(event, Ping):
                        client.sendall(connection.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if connection.state is ConnectionState.REMOTE_CLOSING:
                            client.sendall(connection.send(event.response()))
                            return "client closed"
                        # Still open: wsproto found a broken frame and tells us the code to close with.
                        client.sendall(connection.send(CloseConnection(event.code, event.reason)))
                        return f"protocol error: {event.reason}"
    except OSError as exc:
        return f"connection lost: {exc}"
    finally:
        for sock in (target, client):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
