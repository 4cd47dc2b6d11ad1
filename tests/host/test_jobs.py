"""Jobs on a real etcd: submit → run with progress → end; locks; abort; orphans after a restart."""

import threading
import time

import pytest

from cairn.errors import NotFound, PreconditionFailed, ValidationError
from cairn.jobs import model, registry
from cairn.jobs.executor import Executor
from cairn.jobs.model import JobState
from cairn.jobs.service import JobService
from cairn.runner import Runner

GATES: dict[str, threading.Event] = {}


def _gate_params(params):
    return {"gate": params["gate"], "lock": params.get("lock", "")}


@registry.job_kind("test.gated", title="Gated {gate}", check_params=_gate_params,
                   locks=lambda node, p: [p["lock"]] if p["lock"] else [], abortable=True)
def _gated(ctx, params):
    ctx.progress(10, "waiting at the gate", "reached the gate")
    gate = GATES[params["gate"]]
    while not gate.wait(0.05):
        ctx.check_abort()
    ctx.progress(90, "past the gate")
    return {"gate": params["gate"]}


@registry.job_kind("test.crash", title="Crash", check_params=lambda p: p)
def _crash(ctx, params):
    raise RuntimeError("handler bug")


@pytest.fixture
def node(store):
    store.put("nodes/n1", {"name": "n1"})
    return "n1"


@pytest.fixture
def jobs(store):
    return JobService(store)


@pytest.fixture
def executor(jobs, node, store):
    lease = store.grant_lease(30)
    return Executor(jobs, node, Runner(), lambda: lease)


def wait_state(jobs, job_id, states, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get(job_id)
        if job.state.value in states:
            return job
        assert time.monotonic() < deadline, f"job stayed {job.state.value}: {job.description}"
        time.sleep(0.05)


def run_until(executor, jobs, job_id, states, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        executor.poll()
        job = jobs.get(job_id)
        if job.state.value in states:
            return job
        assert time.monotonic() < deadline, f"job stayed {job.state.value}: {job.description}"
        time.sleep(0.05)


def gate(name):
    GATES[name] = threading.Event()
    return GATES[name]


def test_diagnostics_job_runs_real_commands_and_succeeds(jobs, executor, node):
    registry.load_all()
    job = jobs.submit("node.diagnostics", node, {"samples": 30})
    assert job.state is JobState.QUEUED
    done = run_until(executor, jobs, job.id, {"success", "failed"})
    assert done.state is JobState.SUCCESS, done.error
    assert done.progress == 100
    assert done.result["store_latency"]["samples"] == 30
    assert any(d["mountpoint"] == "/" for d in done.result["filesystems"])
    assert any("lo" == n["name"] for n in done.result["network"])
    messages = [line.message for line in done.log]
    assert messages[0] == "started" and messages[-1] == "finished"
    assert any(m.startswith("kernel: ") for m in messages)
    assert jobs.lock_holder(f"node-diagnostics:{node}") is None, "lock not released"


def test_submit_rejects_unknown_kind_node_and_params(jobs, node):
    with pytest.raises(ValidationError) as caught:
        jobs.submit("no.such.kind", node, {})
    assert "kind" in caught.value.fields
    with pytest.raises(ValidationError) as caught:
        jobs.submit("node.diagnostics", "ghost", {})
    assert caught.value.fields == {"node": "no node named 'ghost' in this cluster"}
    with pytest.raises(ValidationError):
        jobs.submit("node.diagnostics", node, {"samples": -1})
    with pytest.raises(NotFound):
        jobs.get("20990101-000000000-deadbe")


def test_second_job_on_the_same_lock_waits_until_the_first_ends(jobs, executor, node):
    first_gate, second_gate = gate("l1"), gate("l2")
    first = jobs.submit("test.gated", node, {"gate": "l1", "lock": "disk:S1"})
    second = jobs.submit("test.gated", node, {"gate": "l2", "lock": "disk:S1"})
    run_until(executor, jobs, first.id, {"running"})
    executor.poll()
    waiting = jobs.get(second.id)
    assert waiting.state is JobState.QUEUED
    assert waiting.waiting_for == "disk:S1"
    assert f"held by {first.id}" in waiting.description
    second_gate.set()
    first_gate.set()
    wait_state(jobs, first.id, {"success"})
    assert run_until(executor, jobs, second.id, {"success"}).result == {"gate": "l2"}


def test_abort_a_running_job_at_its_next_safe_point(jobs, executor, node):
    gate("ab")
    job = jobs.submit("test.gated", node, {"gate": "ab"})
    run_until(executor, jobs, job.id, {"running"})
    jobs.request_abort(job.id)
    ended = wait_state(jobs, job.id, {"aborted", "success", "failed"})
    assert (ended.state, ended.error) == (JobState.ABORTED, "aborted on request")
    assert not jobs.abort_requested(job.id), "abort request left behind"
    with pytest.raises(PreconditionFailed):
        jobs.request_abort(job.id)


def test_abort_a_queued_job_before_it_starts(jobs, executor, node):
    job = jobs.submit("test.gated", node, {"gate": "never"})
    jobs.request_abort(job.id)
    ended = run_until(executor, jobs, job.id, {"aborted"})
    assert ended.started_at is None


def test_a_crashing_handler_fails_the_job_with_the_reason(jobs, executor, node):
    job = jobs.submit("test.crash", node, {})
    ended = run_until(executor, jobs, job.id, {"failed", "success"})
    assert ended.error == "internal error: RuntimeError: handler bug"


def test_running_jobs_of_a_restarted_agent_are_marked_failed(jobs, node, store):
    job = jobs.submit("test.gated", node, {"gate": "orphan", "lock": "vm:1"})
    running = jobs.apply(job, model.Start(time.time()))
    jobs.acquire_locks(running, store.grant_lease(30))
    failed = jobs.fail_orphans(node, "agent restarted")
    assert [j.id for j in failed] == [job.id]
    after = jobs.get(job.id)
    assert (after.state, after.error) == (JobState.FAILED, "agent restarted")
    assert jobs.lock_holder("vm:1") is None


def test_locks_are_freed_when_the_holder_lease_expires(jobs, node, store):
    job = jobs.submit("test.gated", node, {"gate": "x", "lock": "vm:2"})
    lease = store.grant_lease(2)
    assert jobs.acquire_locks(job, lease) is None
    assert jobs.lock_holder("vm:2")["job"] == job.id
    other = jobs.submit("test.gated", node, {"gate": "y", "lock": "vm:2"})
    assert jobs.acquire_locks(other, store.grant_lease(30)) == "vm:2"
    deadline = time.monotonic() + 10
    while jobs.lock_holder("vm:2") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert jobs.acquire_locks(other, store.grant_lease(30)) is None


def test_job_listing_is_newest_first_and_filters(jobs, node):
    a = jobs.submit("test.gated", node, {"gate": "a"})
    time.sleep(0.01)
    b = jobs.submit("test.gated", node, {"gate": "b"})
    assert [j.id for j in jobs.list()][:2] == [b.id, a.id]
    assert jobs.list(state="success") == []
    assert {j.id for j in jobs.list(node=node)} == {a.id, b.id}
