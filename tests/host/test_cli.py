"""cairnctl against real agent and web processes: login, node list, job list/show/abort, --json."""

import json
import sys
import time

import pytest

from cairn.runner import Runner


@pytest.fixture
def ctl(stack, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}

    def run(*args, input=None, check=True):
        return Runner().run([sys.executable, "-m", "cairn.cli.main", *args], input=input, env=env,
                            check=check, timeout=120)
    run("--url", stack.url, "--ca", stack.ca, "login", "--password-stdin", input=stack.password + "\n")
    return run


def test_login_keeps_a_private_token(ctl, tmp_path):
    state = tmp_path / "cairn" / "cli.json"
    assert state.stat().st_mode & 0o777 == 0o600
    assert json.loads(state.read_text())["user"] == "admin"


def test_wrong_password_is_refused_with_the_api_message(stack, tmp_path):
    result = Runner().run([sys.executable, "-m", "cairn.cli.main", "--url", stack.url, "--ca", stack.ca,
                           "login", "--password-stdin"], input="wrong\n", check=False,
                          env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == "error (401): wrong user name or password"
    stack.store().delete_prefix("auth/login-failures/")


def test_node_list_as_table_and_json(ctl, stack):
    lines = ctl("node", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ONLINE", "CPUS", "KERNEL", "UPTIME_S"]
    assert lines[1].split()[:2] == [stack.node, "yes"]
    assert [n["name"] for n in json.loads(ctl("--json", "node", "list").stdout)] == [stack.node]


def test_cluster_status_of_a_standalone_node(ctl, stack):
    lines = ctl("cluster", "status").stdout.splitlines()
    assert lines[0] == "standalone node (not in a cluster)"
    assert lines[1].split() == ["NAME", "ROLE", "LEADER", "REACHABLE", "RTT_MS", "DB_BYTES", "PEER"]
    assert lines[2].split()[1:4] == ["voter", "yes", "yes"]
    assert "quorum: 1 of 1 voters answer, 1 needed; losing one more voting member stops all changes" in lines[4]
    assert lines[5] == "roles: a single node votes alone"
    status = json.loads(ctl("--json", "cluster", "status").stdout)
    assert status["leader"] == status["members"][0]["id"] and status["quorum"]["can_lose"] == 0


def test_diagnose_wait_then_job_list_and_show(ctl, stack):
    job = json.loads(ctl("--json", "node", "diagnose", stack.node, "--samples", "10", "--wait").stdout)
    assert job["state"] == "success"
    listed = ctl("job", "list").stdout.splitlines()
    assert listed[0].split()[:4] == ["ID", "NODE", "STATE", "PROGRESS"]
    assert listed[1].split()[:4] == [job["id"], stack.node, "success", "100"]
    shown = ctl("job", "show", job["id"]).stdout
    assert "state: success" in shown and "| finished" in shown


def test_abort_of_an_ended_job_and_unknown_job_say_why(ctl, stack):
    job = json.loads(ctl("--json", "node", "diagnose", stack.node, "--samples", "5", "--wait").stdout)
    ended = ctl("job", "abort", job["id"], check=False)
    assert ended.returncode == 1
    assert ended.stderr.strip() == f"error (409): job {job['id']} has already ended (success)"
    missing = ctl("job", "show", "nope", check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "error (404): no job with id 'nope'")


def test_abort_a_running_job(ctl, stack):
    job = json.loads(ctl("--json", "node", "diagnose", stack.node, "--samples", "100000").stdout)
    assert "abort requested" in ctl("job", "abort", job["id"]).stdout
    deadline = time.monotonic() + 30
    while (state := json.loads(ctl("--json", "job", "show", job["id"]).stdout))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert (state["state"], state["error"]) in {("aborted", "aborted on request"),
                                                ("aborted", "aborted before it started")}


def test_unreachable_server_is_exit_3(tmp_path):
    result = Runner().run([sys.executable, "-m", "cairn.cli.main", "--url", "https://127.0.0.1:9", "--insecure",
                           "login", "--password-stdin"], input="x\n", check=False,
                          env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 3
    assert "cannot reach https://127.0.0.1:9" in result.stderr


def test_job_list_pages_and_all(ctl, stack):
    ids = [json.loads(ctl("--json", "node", "diagnose", stack.node, "--samples", "3", "--wait").stdout)["id"]
           for _ in range(3)]
    first = ctl("job", "list", "--limit", "2")
    assert len(first.stdout.splitlines()) == 3                     # header and two jobs
    token = first.stderr.split("--after ", 1)[1].split(",")[0]
    second = ctl("--json", "job", "list", "--limit", "2", "--after", token).stdout
    everything = [j["id"] for j in json.loads(ctl("--json", "job", "list", "--limit", "2", "--all").stdout)]
    assert everything[:3] == ids[::-1]
    assert [j["id"] for j in json.loads(second)] == everything[2:4]
