"""Real cairn-agent and cairn-web processes on a real etcd: the API end to end, bad input, the
event stream, an agent killed mid-job, and etcd going away under the web server."""

import json
import os
import time

import requests

from cairn import __version__
from cairn.runner import Runner
from cairn.storage import disks


def api(stack):
    return stack.url + "/api/v1"


def wait_job(session, stack, job_id, states=("success", "failed", "aborted"), timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        job = session.get(f"{api(stack)}/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['state']}"
        time.sleep(0.2)


def test_console_serves_https_with_the_node_certificate(stack):
    reply = requests.get(api(stack) + "/health", verify=stack.ca)
    assert reply.json() == {"status": "ok", "store": "ok", "node": stack.node, "version": __version__}
    assert (stack.dir / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
    assert (stack.dir / "admin-password").stat().st_mode & 0o777 == 0o600


def test_node_reports_basic_inventory(stack):
    nodes = stack.session().get(api(stack) + "/nodes").json()["nodes"]
    assert [n["name"] for n in nodes] == [stack.node]
    node = nodes[0]
    assert node["online"] is True
    assert node["cpus"] == os.cpu_count()
    assert node["kernel"] == os.uname().release
    assert node["memory_total"] > 0 and node["uptime"] > 0
    expected = [d.name for d in disks.disks(disks.parse_lsblk(Runner().run(disks.LSBLK_ARGV).stdout))]
    assert [d["name"] for d in node["disks"]] == expected


def test_diagnostics_job_through_the_api(stack):
    session = stack.session()
    reply = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={"samples": 50})
    assert reply.status_code == 202
    job = wait_job(session, stack, reply.json()["id"])
    assert job["state"] == "success", job["error"]
    assert job["result"]["store_latency"]["samples"] == 50
    listed = session.get(api(stack) + "/jobs").json()["jobs"]
    assert listed[0]["id"] == job["id"] and "log" not in listed[0]
    assert session.post(f"{api(stack)}/jobs/{job['id']}/abort").status_code == 409


def test_wrong_password_is_401_then_429_with_retry_after(stack):
    session = stack.session(login=False)
    session.headers["X-Forwarded-For"] = "ignored"  # the limit is per connecting address
    codes = [session.post(api(stack) + "/auth/login", json={"username": "admin", "password": "nope"})
             for _ in range(6)]
    assert [r.status_code for r in codes] == [401] * 5 + [429]
    assert codes[0].json()["error"]["message"] == "wrong user name or password"
    assert 0 < int(codes[5].headers["Retry-After"]) <= 300
    assert "too many failed logins" in codes[5].json()["error"]["message"]
    stack.store().delete_prefix("auth/login-failures/")   # let the other tests log in again


def test_bad_input_names_the_problem(stack):
    session = stack.session()
    malformed = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", data="{oops",
                             headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert list(malformed.json()["error"]["fields"]) == ["body"]
    wrong_field = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={"sample": 3})
    assert wrong_field.status_code == 400
    assert wrong_field.json()["error"]["fields"] == {"sample": "Unknown field."}
    out_of_range = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={"samples": 0})
    assert list(out_of_range.json()["error"]["fields"]) == ["samples"]
    unknown_job = session.get(api(stack) + "/jobs/20990101-000000000-abcdef")
    assert unknown_job.status_code == 404
    assert unknown_job.json()["error"] == {"code": "not_found", "message": "no job with id '20990101-000000000-abcdef'",
                                           "details": {"job": "20990101-000000000-abcdef"}}
    unknown_node = session.post(f"{api(stack)}/nodes/ghost/diagnostics", json={})
    assert unknown_node.status_code == 404
    bad_query = session.get(api(stack) + "/jobs", params={"state": "sleeping"})
    assert list(bad_query.json()["error"]["fields"]) == ["state"]
    missing_password = session.post(api(stack) + "/auth/login", json={"username": "admin"})
    assert missing_password.json()["error"]["fields"] == {"password": "Missing data for required field."}


def test_unauthenticated_and_bad_token_requests_are_refused(stack):
    plain = stack.session(login=False)
    assert plain.get(api(stack) + "/jobs").status_code == 401
    plain.headers["Authorization"] = "Bearer not-a-token"
    reply = plain.get(api(stack) + "/jobs")
    assert reply.status_code == 401
    assert "invalid or has expired" in reply.json()["error"]["message"]


def test_logout_revokes_the_token(stack):
    session = stack.session()
    assert session.post(api(stack) + "/auth/logout").status_code == 200
    assert session.get(api(stack) + "/jobs").status_code == 401


def test_openapi_document_describes_the_api(stack):
    spec = stack.session().get(api(stack) + "/openapi.json").json()
    assert spec["info"]["title"] == "Cairn API"
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/abort", "/api/v1/nodes",
            "/api/v1/auth/login", "/api/v1/events/stream"} <= set(spec["paths"])


def test_event_stream_carries_job_progress_to_the_end(stack):
    session = stack.session()
    since = stack.store().revision()
    reply = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={"samples": 300})
    job_id = reply.json()["id"]
    progress = []
    with session.get(api(stack) + "/events/stream", params={"since": since}, stream=True, timeout=30) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "job":
                data = json.loads(line.removeprefix("data: "))
                if data["id"] == job_id:
                    progress.append((data["state"], data["progress"]))
                    if data["state"] in ("success", "failed"):
                        break
    assert progress[0] == ("queued", 0)
    assert progress[-1] == ("success", 100)
    assert any(state == "running" and 0 < pct < 100 for state, pct in progress)
    assert [p for _, p in progress] == sorted(p for _, p in progress)


def test_agent_killed_mid_job_marks_the_job_failed_after_restart(stack):
    session = stack.session()
    job_id = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics",
                          json={"samples": 100000}).json()["id"]
    wait_job(session, stack, job_id, states=("running",))
    stack.agent.kill()
    assert session.get(f"{api(stack)}/jobs/{job_id}").json()["state"] == "running"
    stack.restart_agent()
    job = wait_job(session, stack, job_id, states=("failed", "success"), timeout=60)
    assert job["state"] == "failed"
    assert job["error"] == "cairn-agent stopped while the job was running (the job was interrupted)"
    # ...and the restarted agent takes new work (the interrupted job's lock was freed).
    again = session.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={"samples": 5}).json()
    assert wait_job(session, stack, again["id"])["state"] == "success"


def test_etcd_down_gives_503_and_the_web_server_survives(stack):
    session = stack.session()
    browser = stack.session(login=False)
    assert browser.post(stack.url + "/login", data={"username": "admin", "password": stack.password}).ok
    member = stack.etcd.members[0]
    member.daemon.stop()
    endpoint = member.client_url.removeprefix("http://")
    try:
        reply = session.get(api(stack) + "/jobs", timeout=30)
        assert reply.status_code == 503
        assert {"code": "unavailable", "message": "cluster store unreachable"} == reply.json()["error"]
        assert "Traceback" not in reply.text
        health = requests.get(api(stack) + "/health", verify=stack.ca, timeout=30)
        assert (health.status_code, health.json()["store"]) == (503, "unreachable")
        page = browser.get(stack.url + "/jobs", timeout=30)
        assert page.status_code == 503
        assert "cluster store unreachable" in page.text and "Traceback" not in page.text
        # A caller with no valid credentials learns nothing of the cluster's insides...
        stranger = requests.get(api(stack) + "/nodes", headers={"Authorization": "Bearer guess"},
                                verify=stack.ca, timeout=30)
        assert (503, "cluster store unreachable") == (stranger.status_code, stranger.json()["error"]["message"])
        assert endpoint not in stranger.text
        # ...which the log keeps, on one line even when the path carries a newline (%0A).
        forged = session.get(api(stack) + "/nodes/x%0A2026-01-01 00:00:00,000 cairn.web INFO forged", timeout=30)
        assert forged.status_code == 503
        log = (stack.dir / "web.log").read_text()
        assert endpoint in log
        assert not any(line.startswith("2026-01-01 00:00:00,000 cairn.web INFO forged") for line in log.splitlines())
        assert "GET /api/v1/nodes/x\\x0a2026-01-01 00:00:00,000 cairn.web INFO forged failed" in log
    finally:
        stack.etcd.start_member(member)
        stack.etcd.wait_healthy()
    assert stack.web.alive()
    deadline = time.monotonic() + 30
    while session.get(api(stack) + "/jobs").status_code != 200:
        assert time.monotonic() < deadline, "web server did not recover after etcd came back"
        time.sleep(0.3)


def test_console_session_cookie_is_secure_and_forms_need_the_csrf_token(stack):
    browser = stack.session(login=False)
    reply = browser.post(stack.url + "/login", data={"username": "admin", "password": stack.password},
                         allow_redirects=False)
    assert reply.status_code == 302
    cookie = reply.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    forged = browser.post(f"{stack.url}/nodes/{stack.node}/diagnostics", data={}, allow_redirects=False)
    assert forged.status_code == 401
    assert "CSRF" in forged.text
    page = browser.get(stack.url + "/").text
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    started = browser.post(f"{stack.url}/nodes/{stack.node}/diagnostics", data={"csrf_token": token},
                           allow_redirects=False)
    assert started.status_code == 302 and "/jobs/" in started.headers["Location"]
    api_forged = browser.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={})
    assert api_forged.status_code == 401
    api_ok = browser.post(f"{api(stack)}/nodes/{stack.node}/diagnostics", json={},
                          headers={"X-CSRF-Token": token})
    assert api_ok.status_code == 202


def test_the_dashboard_shows_a_node_whose_inventory_has_not_arrived(stack):
    """A node record without its inventory (an agent that has not reported it yet) is a row of
    dashes, not a 500 for the whole dashboard."""
    stack.store().put("nodes/bare-node", {"name": "bare-node"})
    try:
        browser = stack.session(login=False)
        browser.post(stack.url + "/login", data={"username": "admin", "password": stack.password})
        page = browser.get(stack.url + "/")
        assert page.status_code == 200
        row = page.text.split('data-node="bare-node"', 1)[1].split("</tr>", 1)[0]
        assert "offline" in row and row.count("—") == 2
    finally:
        stack.store().delete("nodes/bare-node")


def test_login_page_redirects_only_within_the_console(stack):
    browser = stack.session(login=False)
    reply = browser.post(stack.url + "/login", data={"username": "admin", "password": stack.password,
                                                     "next": "https://evil.example/"}, allow_redirects=False)
    assert reply.headers["Location"] == "/"
