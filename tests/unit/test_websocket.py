"""The console's WebSocket end: handshake answers, frames both ways, and the relay over real sockets
(a socketpair for the browser's side, a local TCP server standing in for the VM's VNC server)."""

from __future__ import annotations

import os
import socket
import struct
import threading

import pytest

from cairn.web import websocket as ws

KEY = "dGhlIHNhbXBsZSBub25jZQ=="          # RFC 6455 section 1.3's example


def upgrade(**extra: str) -> dict[str, str]:
    headers = {"upgrade": "websocket", "connection": "keep-alive, Upgrade", "sec-websocket-version": "13",
               "sec-websocket-key": KEY}
    headers.update(extra)
    return headers


def test_the_accept_key_is_the_rfc_example():
    assert ws.accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_answers_101_and_picks_binary_when_asked():
    answer, protocol = ws.handshake(upgrade(**{"sec-websocket-protocol": "base64, binary"}))
    text = answer.decode()
    assert text.startswith("HTTP/1.1 101 Switching Protocols\r\n") and text.endswith("\r\n\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in text
    assert protocol == "binary" and "Sec-WebSocket-Protocol: binary" in text
    answer, protocol = ws.handshake(upgrade())
    assert protocol is None and b"Sec-WebSocket-Protocol" not in answer


@pytest.mark.parametrize("change, says", [
    ({"upgrade": "h2c"}, "Upgrade: websocket"),
    ({"connection": "keep-alive"}, "Connection: Upgrade"),
    ({"sec-websocket-version": "8"}, "version 13"),
    ({"sec-websocket-key": "c2hvcnQ="}, "16 bytes"),
    ({"sec-websocket-key": "not base64!"}, "16 bytes"),
])
def test_a_request_that_is_no_websocket_upgrade_is_refused_with_the_reason(change, says):
    with pytest.raises(ValueError, match=says):
        ws.handshake(upgrade(**change))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frames_round_trip_at_every_length_encoding(size):
    payload = os.urandom(size)
    frame = ws.encode(ws.BINARY, payload, mask=b"\x01\x02\x03\x04")
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8) + 4
    assert len(frame) == header + size
    reader = ws.FrameReader()
    messages = []
    for i in range(0, len(frame), 777):                     # bytes arrive in pieces
        messages += reader.feed(frame[i:i + 777])
    assert messages == [(ws.BINARY, payload)]
    assert ws.FrameReader(require_mask=False).feed(ws.encode(ws.BINARY, payload)) == [(ws.BINARY, payload)]


def test_fragments_are_joined_and_a_ping_between_them_comes_out_first():
    mask = b"\xaa\xbb\xcc\xdd"
    first = bytearray(ws.encode(ws.BINARY, b"hello ", mask))
    first[0] &= 0x7F                                        # not final
    ping = ws.encode(ws.PING, b"p", mask)
    last = bytearray(ws.encode(ws.CONTINUATION, b"world", mask))
    assert ws.FrameReader().feed(bytes(first) + ping + bytes(last)) == [(ws.PING, b"p"), (ws.BINARY, b"hello world")]


@pytest.mark.parametrize("frame, says", [
    (ws.encode(ws.BINARY, b"x"), "masked"),
    (bytes([0xC2, 0x81]) + b"abcd" + b"x", "reserved"),
    (ws.encode(ws.CONTINUATION, b"x", b"abcd"), "continuation"),
    (ws.encode(0x3, b"x", b"abcd"), "unknown opcode"),
    (ws.encode(ws.PING, b"x" * 126, b"abcd"), "control frames"),
    (bytes([0x82, 0xFF]) + struct.pack("!Q", ws.MAX_PAYLOAD + 1), "too big"),
])
def test_broken_frames_are_protocol_errors(frame, says):
    with pytest.raises(ws.ProtocolError, match=says):
        ws.FrameReader().feed(frame)


def read_messages(sock: socket.socket, want: int) -> list[tuple[int, bytes]]:
    reader, got = ws.FrameReader(require_mask=False), []
    while len(got) < want:
        data = sock.recv(65536)
        if not data:
            break
        got += reader.feed(data)
    return got


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


def start_relay(address) -> tuple[socket.socket, threading.Thread, list[str]]:
    """The relay between one end of a socketpair (the browser's side, returned) and `address`, in a
    thread; the list gets why it ended."""
    browser, relay_end = socket.socketpair()
    target = socket.create_connection(address)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(ws.relay(relay_end, target)), daemon=True)
    thread.start()
    browser.settimeout(10)
    return browser, thread, result


def test_relay_moves_bytes_both_ways_answers_pings_and_ends_on_close(vnc_server):
    address, seen = vnc_server
    browser, thread, result = start_relay(address)
    assert read_messages(browser, 1) == [(ws.BINARY, b"RFB 003.008\n")]
    browser.sendall(ws.encode(ws.BINARY, b"rfb 003.008\n", mask=b"1234"))
    assert read_messages(browser, 1) == [(ws.BINARY, b"RFB 003.008\n")]
    browser.sendall(ws.encode(ws.PING, b"are you there", mask=b"abcd"))
    assert read_messages(browser, 1) == [(ws.PONG, b"are you there")]
    browser.sendall(ws.encode(ws.CLOSE, ws.close_payload(1000), mask=b"wxyz"))
    assert read_messages(browser, 1) == [(ws.CLOSE, struct.pack("!H", 1000))]
    thread.join(10)
    assert result == ["client closed"] and seen == [b"rfb 003.008\n"]


def test_relay_answers_an_unmasked_frame_with_close_1002(vnc_server):
    address, _ = vnc_server
    browser, thread, result = start_relay(address)
    read_messages(browser, 1)
    browser.sendall(bytes([0x82, 0x01, 0x00]))               # unmasked: the relay must refuse it
    messages = read_messages(browser, 1)
    assert messages[0][0] == ws.CLOSE and struct.unpack("!H", messages[0][1][:2]) == (1002,)
    thread.join(10)
    assert result and result[0].startswith("protocol error: client frames must be masked")


def test_relay_closes_the_browser_side_when_the_display_goes():
    server = socket.create_server(("127.0.0.1", 0))
    browser, thread, result = start_relay(server.getsockname())
    conn, _ = server.accept()
    conn.sendall(b"last words")
    conn.close()                                             # the VM stopped
    messages = read_messages(browser, 2)
    assert messages[0] == (ws.BINARY, b"last words")
    assert messages[1][0] == ws.CLOSE and struct.unpack("!H", messages[1][1][:2]) == (1000,)
    thread.join(10)
    assert result == ["target closed"]
    server.close()
