"""The console's WebSocket end: what is ours around wsproto (the reasons a request is refused, the
101 answer and the subprotocol chosen) and the relay over real sockets (a socketpair for the
browser's side, a local TCP server standing in for the VM's VNC server). The browser's side of the
tests speaks through wsproto's client, so frames are checked by the same kept implementation a
browser would agree with, not by code of ours."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from cairn.web import websocket as ws

KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3's example


def upgrade(**extra: str) -> list[tuple[str, str]]:
    headers = {"Host": "node-a", "Upgrade": "websocket", "Connection": "keep-alive, Upgrade",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": KEY}
    headers.update(extra)
    return list(headers.items())


def test_the_answer_is_101_with_the_rfc_accept_key_and_binary_when_asked():
    answer, connection, protocol = ws.accept(upgrade(**{"Sec-WebSocket-Protocol": "base64, binary"}),
                                             "/api/v1/vms/web/vnc")
    text = answer.decode()
    assert text.startswith("HTTP/1.1 101 ") and text.endswith("\r\n\r\n")
    assert "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in text
    assert protocol == "binary" and "\r\nSec-WebSocket-Protocol: binary\r\n" in text
    assert connection.state is ConnectionState.OPEN
    answer, _, protocol = ws.accept(upgrade(), "/api/v1/vms/web/vnc")
    assert protocol is None and b"sec-websocket-protocol" not in answer.lower()


@pytest.mark.parametrize("change, says", [
    ({"Upgrade": "h2c"}, "Upgrade: websocket"),
    ({"Connection": "keep-alive"}, "Connection: Upgrade"),
    ({"Sec-WebSocket-Version": "8"}, "version 13"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, "16 bytes"),
    ({"Sec-WebSocket-Key": "not base64!"}, "16 bytes"),
])
def test_a_request_that_is_no_websocket_upgrade_is_refused_with_the_reason(change, says):
    assert says in ws.upgrade_problem({name.lower(): value for name, value in upgrade(**change)})
    with pytest.raises(ValueError, match=says):
        ws.accept(upgrade(**change), "/api/v1/vms/web/vnc")


def test_a_plain_get_is_told_that_the_url_is_a_websocket():
    assert ws.upgrade_problem({"host": "node-a"}) == "this URL is a WebSocket (send Upgrade: websocket)"


class Browser:
    """The browser's end of a socketpair, framing with wsproto's client."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connection = Connection(ConnectionType.CLIENT)
        self.pending: list = []
        self.sock.settimeout(10)

    def send(self, event) -> None:
        self.sock.sendall(self.connection.send(event))

    def events(self, want: int) -> list:
        """The next `want` events (fewer if the relay's side closed first)."""
        while len(self.pending) < want:
            data = self.sock.recv(65536)
            self.connection.receive_data(data or None)
            self.pending += list(self.connection.events())
            if not data:
                break
        got, self.pending = self.pending[:want], self.pending[want:]
        return got

    def binary(self, size: int) -> bytes:
        """`size` bytes of binary messages, however the relay framed them."""
        data = b""
        while len(data) < size:
            (event,) = self.events(1)
            assert isinstance(event, BytesMessage), event
            data += event.data
        return data


@pytest.fixture
def vnc_server():
    """A TCP server that sends an RFB banner, then echoes what it gets upper-cased."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"RFB 003.008\n")
            while data := conn.recv(65536):
                seen.append(data)
                conn.sendall(data.upper())
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname(), seen
    server.close()


def start_relay(address) -> tuple[Browser, threading.Thread, list[str]]:
    """The relay between one end of a socketpair (the browser's side, returned) and `address`, in a
    thread, after the handshake; the list gets why it ended."""
    browser_end, relay_end = socket.socketpair()
    target = socket.create_connection(address)
    _, connection, _ = ws.accept(upgrade(), "/api/v1/vms/web/vnc")
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(ws.relay(relay_end, target, connection)), daemon=True)
    thread.start()
    return Browser(browser_end), thread, result


def test_relay_moves_bytes_both_ways_answers_pings_and_ends_on_close(vnc_server):
    address, seen = vnc_server
    browser, thread, result = start_relay(address)
    assert browser.binary(12) == b"RFB 003.008\n"
    browser.send(BytesMessage(b"rfb 003.008\n"))
    assert browser.binary(12) == b"RFB 003.008\n"
    browser.send(TextMessage("text goes as bytes"))
    assert browser.binary(18) == b"TEXT GOES AS BYTES"
    browser.send(Ping(b"are you there"))
    assert [Pong(b"are you there")] == browser.events(1)
    browser.send(CloseConnection(1000))
    (close,) = browser.events(1)
    assert isinstance(close, CloseConnection) and close.code == 1000
    thread.join(10)
    assert ["client closed"] == result
    assert b"".join(seen) == b"rfb 003.008\ntext goes as bytes"


def test_a_big_message_in_many_pieces_reaches_the_vm_whole():
    server = socket.create_server(("127.0.0.1", 0))
    payload = os.urandom(300_000)
    received = bytearray()

    def serve():                                            # takes it all, then says what it got
        conn, _ = server.accept()
        with conn:
            while len(received) < len(payload) and (data := conn.recv(65536)):
                received.extend(data)
            conn.sendall(b"got %d" % len(received))
            conn.recv(1)                                    # open until the relay ends
    threading.Thread(target=serve, daemon=True).start()
    browser, thread, result = start_relay(server.getsockname())
    frame = browser.connection.send(BytesMessage(payload))
    for start in range(0, len(frame), 7_777):                 # bytes arrive as they may
        browser.sock.sendall(frame[start:start + 7_777])
    assert browser.binary(10) == b"got 300000"
    assert bytes(received) == payload
    browser.send(CloseConnection(1000))
    thread.join(10)
    assert ["client closed"] == result
    server.close()


def test_relay_answers_an_unmasked_frame_with_close_1002(vnc_server):
    address, _ = vnc_server
    browser, thread, result = start_relay(address)
    browser.binary(12)
    browser.sock.sendall(bytes([0x82, 0x01, 0x00]))          # unmasked: the relay must refuse it
    (close,) = browser.events(1)
    assert isinstance(close, CloseConnection) and close.code == 1002
    thread.join(10)
    assert result and result[0].startswith("protocol error:")


def test_relay_closes_the_browser_side_when_the_display_goes():
    server = socket.create_server(("127.0.0.1", 0))
    browser, thread, result = start_relay(server.getsockname())
    conn, _ = server.accept()
    conn.sendall(b"last words")
    conn.close()                                             # the VM stopped
    assert browser.binary(10) == b"last words"
    (close,) = browser.events(1)
    assert isinstance(close, CloseConnection) and close.code == 1000
    thread.join(10)
    assert ["target closed"] == result
    server.close()


def test_relay_ends_when_the_browser_goes_away(vnc_server):
    address, _ = vnc_server
    browser, thread, result = start_relay(address)
    browser.binary(12)
    browser.sock.close()
    thread.join(10)
    assert ["client went away"] == result
