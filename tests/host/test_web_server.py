"""cairn-web under hostile or simply many clients, on a real stack (etcd, gunicorn, TLS): requests
are refused from their headers before their bodies are read, bodies are capped and timed, long
event streams and VM consoles hold no request worker, and a reconnecting stream gets exactly what
it missed. The consoles relay real QEMU VNC servers (no disk, paused: their screen says the guest
has not initialised the display) to a raw WebSocket client and to noVNC in chromium.

The stack's agent is stopped once the node is reported: these VMs are records whose screens are
QEMUs started here, and no agent must report on them."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from cairn.cluster import events
from cairn.compute import model
from cairn.devstack import free_port
from cairn.runner import Runner
from cairn.web import guards, server
from environment import missing
from support import CANVAS_HAS_PICTURE, console_page, goto
from vnc_client import Console

MiB = 1 << 20
needs_qemu = missing(tools={"qemu-system-x86_64": "Debian package qemu-system-x86"})


@pytest.fixture(scope="module")
def web(stack):
    """The stack with its agent stopped, and a bearer token."""
    stack.agent.stop()
    return stack, stack.session().headers["Authorization"].removeprefix("Bearer ")


def api(stack) -> str:
    return stack.url + "/api/v1"


def tls(stack) -> ssl.SSLSocket:
    host, port = stack.url.removeprefix("https://").rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=20)
    return ssl.create_default_context(cafile=stack.ca).wrap_socket(raw, server_hostname=host)


def head_of(sock: ssl.SSLSocket, timeout: float) -> tuple[int, str, bytes]:
    """The status, head and what came of the body of the answer on sock (0 if none came in time)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, socket.timeout):
        pass
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head.decode(errors="replace"), rest


def request_head(stack, method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {stack.url.removeprefix('https://')}",
             *[f"{name}: {value}" for name, value in headers.items()]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def workers_rss_kib(stack) -> dict[int, int]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == stack.web.pid:
                status = (stat.parent / "status").read_text()
                found[int(stat.parent.name)] = int(status.split("VmRSS:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return found


def health_times(stack, count: int = 10) -> list[float]:
    times = []
    for _ in range(count):
        started = time.monotonic()
        reply = requests.get(api(stack) + "/health", verify=stack.ca, timeout=10)
        times.append(time.monotonic() - started)
        assert reply.status_code == 200
    return times


# --- the gate comes before the body ----------------------------------------------------------
def test_json_nested_100000_deep_is_401_without_credentials_and_400_with_them(web):
    stack, token = web
    deep = "[" * 100_000
    stranger = requests.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", data=deep, verify=stack.ca,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert (401, "unauthenticated") == (stranger.status_code, stranger.json()["error"]["code"])
    mine = requests.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", data=deep, verify=stack.ca, timeout=30,
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert mine.status_code == 400
    assert {"body": f"nests arrays and objects more than {guards.MAX_JSON_DEPTH} levels deep"} == \
        mine.json()["error"]["fields"]
    login = requests.post(api(stack) + "/auth/login", data='{"username": ' + deep[:5000], verify=stack.ca, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert (400, ["body"]) == (login.status_code, list(login.json()["error"]["fields"]))


def test_a_300_mib_body_without_credentials_is_refused_before_it_is_read(web):
    stack, _ = web
    before = workers_rss_kib(stack)
    sock = tls(stack)
    sock.sendall(request_head(stack, "POST", f"/api/v1/nodes/{stack.node}/diagnostics",
                              {"Content-Type": "application/json", "Content-Length": str(300 * MiB)}))
    sock.sendall(b"[" * MiB)                                  # 1 MiB of the 300: the rest never comes
    status, head, body = head_of(sock, timeout=15)
    sock.close()
    assert 401 == status, head
    grown = {pid: workers_rss_kib(stack).get(pid, 0) - rss for pid, rss in before.items()}
    assert all(kib < 16 * 1024 for kib in grown.values()), grown


def test_a_body_over_the_routes_cap_is_413_before_it_is_read(web):
    stack, token = web
    sock = tls(stack)
    sock.sendall(request_head(stack, "POST", f"/api/v1/nodes/{stack.node}/diagnostics",
                              {"Content-Type": "application/json", "Content-Length": str(300 * MiB),
                               "Authorization": f"Bearer {token}"}))
    status, head, _ = head_of(sock, timeout=15)
    sock.close()
    assert 413 == status, head
    big_login = requests.post(api(stack) + "/auth/login", data=b"x" * (guards.LOGIN_BODY_CAP + 1),
                              headers={"Content-Type": "application/json"}, verify=stack.ca, timeout=30)
    assert (413, "too_large") == (big_login.status_code, big_login.json()["error"]["code"])


def test_clients_trickling_bodies_do_not_stop_the_health_check_and_get_408(web):
    stack, _ = web
    tricklers = []
    for _ in range(40):            # more than the old server's threads (2 workers x 8 in this stack)
        sock = tls(stack)
        sock.sendall(request_head(stack, "POST", "/api/v1/auth/login",
                                  {"Content-Type": "application/json", "Content-Length": "1000"}) + b'{"user')
        tricklers.append(sock)
    started = time.monotonic()
    try:
        assert max(health_times(stack)) < 1.0
        statuses = [head_of(sock, timeout=guards.BODY_IDLE_SECONDS + 15)[0] for sock in tricklers]
    finally:
        for sock in tricklers:
            sock.close()
    assert [408] * 40 == statuses
    assert time.monotonic() - started < guards.BODY_IDLE_SECONDS + 15


def test_a_client_that_stalls_in_the_handshake_or_the_headers_is_let_go(web):
    stack, _ = web
    host, port = stack.url.removeprefix("https://").rsplit(":", 1)
    silent = socket.create_connection((host, int(port)), timeout=30)      # never starts TLS
    halfway = tls(stack)
    halfway.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: ")            # never ends its headers
    started = time.monotonic()
    assert b"" == silent.recv(1)
    assert time.monotonic() - started < server.HANDSHAKE_SECONDS + 5
    halfway.settimeout(30)
    assert b"" == halfway.recv(1)
    assert time.monotonic() - started < max(server.HANDSHAKE_SECONDS, server.KEEPALIVE_SECONDS) + 5
    silent.close()
    halfway.close()


def test_a_console_form_number_in_superscript_is_400_naming_the_field(web):
    stack, _ = web
    browser = stack.session(login=False)
    assert browser.post(stack.url + "/login", data={"username": "admin", "password": stack.password}).ok
    token = browser.get(stack.url + "/").text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    reply = browser.post(stack.url + "/vms", data={"csrf_token": token, "name": "tiny", "memory_mib": "²"})
    assert reply.status_code == 400
    assert "memory_mib: must be a whole number (digits 0-9)" in reply.text


# --- long-lived streams ----------------------------------------------------------------------
def open_stream(stack, token: str, extra: dict[str, str] | None = None) -> ssl.SSLSocket:
    sock = tls(stack)
    sock.sendall(request_head(stack, "GET", "/api/v1/events/stream",
                              {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **(extra or {})}))
    return sock


@needs_qemu
def test_many_open_event_streams_and_consoles_leave_the_server_answering(web, screens):
    stack, token = web
    streams = [open_stream(stack, token) for _ in range(60)]    # the old server had 16 threads here
    consoles = [Console(stack.url, f"/api/v1/vms/{name}/vnc", token, stack.ca) for name in screens]
    try:
        assert [200] * 60 == [head_of(sock, timeout=10)[0] for sock in streams]
        assert [101] * len(screens) == [console.status for console in consoles]
        assert all(console.rfb_init()[0] >= 640 for console in consoles)
        times = health_times(stack, 20)
        assert max(times) < 1.0, times
        vms = requests.get(api(stack) + "/vms", headers={"Authorization": f"Bearer {token}"}, verify=stack.ca,
                           timeout=10)
        assert set(screens) <= {vm["name"] for vm in vms.json()["vms"]}
    finally:
        for sock in streams:
            sock.close()
        for console in consoles:
            console.close()


def sse_messages(lines, want: int, kinds: tuple[str, ...] = ("event", "reload")) -> list[dict]:
    """The next `want` messages of the kinds asked for, as {"id", "event", "data"}, from a stream's
    lines (one iter_lines() per stream: it buffers)."""
    found, current = [], {}
    for line in lines:
        if line == "":
            if current.get("event") in kinds:
                found.append(current)
                if len(found) == want:
                    return found
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return found


def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(web):
    stack, token = web
    store = stack.store()
    session = stack.session()

    def emit(message: str) -> None:
        events.emit(store, severity="info", node=stack.node, source="test", message=message)

    with session.get(api(stack) + "/events/stream", params={"since": store.revision()}, stream=True,
                     timeout=30) as first:
        emit("one")
        (seen,) = sse_messages(first.iter_lines(decode_unicode=True), 1)
    assert "one" == seen["data"]["message"]
    emit("two")
    emit("three")
    with session.get(api(stack) + "/events/stream", stream=True, timeout=30,
                     headers={"Last-Event-ID": seen["id"]}) as again:
        lines = again.iter_lines(decode_unicode=True)
        missed = sse_messages(lines, 2)
        emit("four")
        (live,) = sse_messages(lines, 1)
    assert ["two", "three"] == [m["data"]["message"] for m in missed]
    assert int(seen["id"]) < int(missed[0]["id"]) < int(missed[1]["id"])
    assert "four" == live["data"]["message"]


def test_a_position_older_than_the_server_keeps_gets_a_reload_event(web):
    stack, token = web
    session = stack.session()
    with session.get(api(stack) + "/events/stream", stream=True, timeout=30, headers={"Last-Event-ID": "1"}) as old:
        (reload,) = sse_messages(old.iter_lines(decode_unicode=True), 1)
    assert "reload" == reload["event"] and reload["data"]["revision"] > 1
    assert "id" not in reload


# --- the VM console relay, against real QEMU VNC servers -------------------------------------
@pytest.fixture(scope="module")
def screens(web, tmp_path_factory):
    """Three VMs of this node whose screens are QEMUs (paused, no disk) serving VNC on loopback."""
    stack, _ = web
    base = tmp_path_factory.mktemp("qemu")
    store = stack.store()
    daemons, names = [], []
    try:
        for index in range(3):
            name, port = f"screen-{index}", free_port()
            while port < 5900:
                port = free_port()
            daemons.append(Runner().spawn(
                ["qemu-system-x86_64", "-name", name, "-machine", "pc,accel=tcg", "-m", "32", "-nodefaults",
                 "-no-user-config", "-vga", "std", "-display", "none", "-vnc", f"127.0.0.1:{port - 5900}", "-S"],
                log_path=base / f"{name}.log"))
            vm = model.Vm(name, f"00000000-0000-4000-8000-{index:012d}", stack.node, "none", 1, 32,
                          nics=(model.Nic(f"52:54:00:5c:00:{index:02x}"),), created_at=time.time())
            store.put(f"vms/{name}", vm.to_dict())
            store.put(f"vm-status/{name}", {"node": stack.node, "state": "running", "accel": "tcg",
                                            "vnc_port": port, "snapshots": [], "files": True})
            names.append(name)
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"QEMU's VNC server for {name} did not answer"
                    time.sleep(0.1)
        yield names
    finally:
        for daemon in daemons:
            daemon.stop()
        for name in names:
            store.delete(f"vms/{name}")
            store.delete(f"vm-status/{name}")


@needs_qemu
def test_the_relay_brings_qemus_server_init_and_refuses_what_it_should(web, screens):
    stack, token = web
    path = f"/api/v1/vms/{screens[0]}/vnc"
    console = Console(stack.url, path, token, stack.ca)
    try:
        assert console.status == 101 and "Sec-WebSocket-Protocol: binary" in console.head
        width, height, name = console.rfb_init()               # QEMU's own VNC server, through the relay
    finally:
        console.close()
    assert (640, 480, f"QEMU ({screens[0]})") == (width, height, name)
    assert 401 == Console(stack.url, path, None, stack.ca).status                       # no login
    assert 401 == Console(stack.url, path, token, stack.ca, origin="https://elsewhere.example").status
    plain = requests.get(stack.url + path, headers={"Authorization": f"Bearer {token}"}, verify=stack.ca, timeout=10)
    assert plain.status_code == 400 and "Upgrade: websocket" in plain.json()["error"]["message"]


@needs_qemu
def test_novnc_in_chromium_draws_the_screen_through_the_relay(web, screens):
    stack, _ = web
    with console_page(stack.url, stack.password) as page:
        goto(page, f"/vms/{screens[1]}/console")
        expect(page.locator("#screen")).to_have_attribute("data-state", "connected", timeout=30_000)
        page.wait_for_function(CANVAS_HAS_PICTURE, timeout=60_000)


def test_a_console_page_whose_position_the_server_no_longer_keeps_reloads_itself(web):
    stack, _ = web
    with console_page(stack.url, stack.password) as page:
        goto(page, "/jobs")
        page.evaluate("() => { window.notReloaded = true; }")
        page.wait_for_timeout(1000)                    # its event stream is open
        events.emit(stack.store(), severity="info", node=stack.node, source="test", message="while away")
        for pid in workers_rss_kib(stack):           # gunicorn starts new workers: new hubs, from now on
            os.kill(pid, signal.SIGKILL)
        # The page's stream comes back with a position from before the new workers began to watch:
        # it is told to reload, and the page does so.
        page.wait_for_function("() => window.notReloaded === undefined", timeout=30_000)
        expect(page.locator("header nav")).to_be_visible()
    assert max(health_times(stack, 3)) < 1.0
