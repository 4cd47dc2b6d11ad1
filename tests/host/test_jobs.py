"""Jobs on a real etcd: submit → run with progress → end; locks; abort; orphans after a restart."""

import re
import threading
import time

import pytest

from cairn.cluster import nodes
from cairn.errors import NotFound, PreconditionFailed, ValidationError
from cairn.jobs import model, registry
from cairn.jobs.executor import Executor
from cairn.jobs.model import JobState
from cairn.jobs.service import JobService, record_writes
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
    nodes.mark_alive(store, node, lease, time.time())     # as the agent does: jobs run under this lease
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
    for step in range(3):
        running = jobs.apply(running, model.Progress(time.time(), message=f"step {step}"))
    jobs.acquire_locks(running, store.grant_lease(30))
    failed = jobs.fail_orphans(node, "agent restarted")
    assert [j.id for j in failed] == [job.id]
    after = jobs.get(job.id)
    assert (after.state, after.error) == (JobState.FAILED, "agent restarted")
    assert [line.message for line in after.log] == ["started", "step 0", "step 1", "step 2",
                                                    "failed: agent restarted"], \
        "the log written before the restart is kept"
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


@registry.job_kind("test.chatty", title="Chatty", check_params=lambda p: {"lines": int(p["lines"])})
def _chatty(ctx, params):
    for number in range(params["lines"]):
        ctx.log(f"line {number}")
    ctx.log("x" * 5000)
    return {}


@registry.job_kind("test.command", title="Command", check_params=lambda p: p)
def _command(ctx, params):
    ctx.runner.run(["sh", "-c", "echo the whole story on stderr >&2; exit 3"], timeout=10)
    return {}


def ended_jobs(store, node, count, start=1_700_000_000.0, gap=60.0):
    """Finished job records written straight into the store (as old jobs would be)."""
    service = JobService(store, clock=lambda: start)
    made = []
    for number in range(count):
        now = start + number * gap
        job = model.Job(id=model.new_job_id(now), kind="test.gated", node=node, params={"gate": "old"},
                        created_at=now)
        job = model.advance(model.advance(job, model.Start(now)), model.Succeed(now + 1, {}))
        service.store.txn([], record_writes(job))
        made.append(job)
    return made


def test_a_job_log_lives_apart_from_its_record_and_stays_bounded(jobs, executor, node, store):
    job = jobs.submit("test.chatty", node, {"lines": model.MAX_LOG_LINES + 60})
    done = run_until(executor, jobs, job.id, {"success", "failed"})
    assert done.state is JobState.SUCCESS, done.error
    record = store.get(f"jobs/{job.id}")
    assert "log" not in record
    assert record["last_log"] == "finished"
    stored = store.list(f"job-log/{job.id}/")
    assert len(stored) == model.MAX_LOG_LINES == len(done.log)
    assert done.log_count == model.MAX_LOG_LINES + 63      # started, lines, the long one, finished
    long_line = done.log[-2].message
    assert long_line.startswith("x" * model.MAX_LOG_LINE_CHARS)
    assert "3000 more characters cut" in long_line
    assert [line.message for line in done.log][-4:-2] == [f"line {model.MAX_LOG_LINES + 58}",
                                                          f"line {model.MAX_LOG_LINES + 59}"]


def test_a_failed_command_keeps_its_argv_and_stderr_in_the_job_log_not_in_the_error(jobs, executor, node):
    job = jobs.submit("test.command", node, {})
    done = run_until(executor, jobs, job.id, {"success", "failed"})
    assert done.state is JobState.FAILED
    assert done.error == "sh exited with 3: the whole story on stderr"
    assert any("command sh -c echo the whole story" in line.message and "exited with 3" in line.message
               for line in done.log)


def test_listing_pages_are_cut_by_the_store_with_a_continue_token(jobs, node, store):
    made = ended_jobs(store, node, 25)
    newest_first = [j.id for j in reversed(made)]
    seen, token = [], None
    while True:
        page = jobs.page(limit=10, after=token)
        seen += [j.id for j in page.jobs]
        token = page.next
        if token is None:
            break
    assert seen == newest_first
    with pytest.raises(ValidationError) as caught:
        jobs.page(after="not-a-token!")
    assert list(caught.value.fields) == ["continue"]


def test_filtered_listings_page_through_the_store_too(jobs, node, store):
    store.put("nodes/n2", {"name": "n2"})
    ended_jobs(store, node, 12)
    theirs = ended_jobs(store, "n2", 3, start=1_700_100_000.0)
    queued = jobs.submit("test.gated", "n2", {"gate": "never"})
    assert [j.id for j in jobs.list(node="n2", limit=10)] == [queued.id] + [j.id for j in reversed(theirs)]
    assert [j.id for j in jobs.list(state="queued")] == [queued.id]
    assert [j.id for j in jobs.active("test.gated")] == [queued.id] and jobs.active("vm.create") == []
    first = jobs.page(state="success", limit=7)
    second = jobs.page(state="success", limit=7, after=first.next)
    third = jobs.page(state="success", limit=7, after=second.next)
    assert [len(first.jobs), len(second.jobs), len(third.jobs), third.next] == [7, 7, 1, None]
    assert len({j.id for j in first.jobs + second.jobs + third.jobs}) == 15


class CountingStore:
    """The store, counting the entries each read brings back (what an agent reads)."""

    def __init__(self, store):
        self._store = store
        self.read = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def list(self, prefix, **kw):
        found = self._store.list(prefix, **kw)
        self.read += len(found)
        return found

    def get_many(self, keys):
        found = self._store.get_many(keys)
        self.read += len(found)
        return found


def test_an_agent_reads_only_its_own_queue_not_every_job(node, store):
    store.put("nodes/n2", {"name": "n2"})
    ended_jobs(store, node, 300)
    mine = JobService(store).submit("test.gated", node, {"gate": "never"})
    JobService(store).submit("test.gated", "n2", {"gate": "never"})
    counting = CountingStore(store)
    queued = JobService(counting).queued_for(node)
    assert [job.id for job, _ in queued] == [mine.id]
    assert counting.read == 2          # its queue entry, then its record


def test_history_keeps_the_newest_ended_jobs_and_never_queued_or_running_ones(node, store):
    made = ended_jobs(store, node, 30)
    later = made[-1].created_at + 3600
    service = JobService(store, clock=lambda: later)
    waiting = service.submit("test.gated", node, {"gate": "never"})
    assert service.prune(keep_days=365, keep_count=10) == 21     # 31 stored, 30 ended: keep 10
    left = [j.id for j in service.list(limit=100)]
    assert left == [waiting.id] + [j.id for j in reversed(made[-9:])]
    assert store.list(f"job-log/{made[0].id}/") == []
    # By age: two days on, the ended jobs are over a day old and go, whatever the count.
    assert JobService(store, clock=lambda: later).prune(keep_days=1, keep_count=1000) == 0
    two_days_on = JobService(store, clock=lambda: later + 2 * 86400)
    assert two_days_on.prune(keep_days=1, keep_count=1000) == 9
    assert [j.id for j in service.list()] == [waiting.id]


def test_a_page_reads_one_page_of_the_store_however_many_jobs_are_stored(node, store):
    ended_jobs(store, node, 300)
    counting = CountingStore(store)
    page = JobService(counting).page(limit=10)
    assert len(page.jobs) == 10 and page.next is not None
    assert counting.read == 2 * 11          # 11 listing keys (one to know there is more), their records


def test_the_console_jobs_page_pages_through_older_jobs(node, store, etcd, tmp_path):
    from cairn import config as config_mod
    from cairn.web.app import create_app
    made = ended_jobs(store, node, 130)
    app = create_app(config_mod.Config(node_name=node, etcd_endpoints=tuple(etcd.endpoints), state_dir=tmp_path,
                                       store_root=store.root), store)
    client = app.test_client()
    with client.session_transaction() as session:
        session["user"], session["csrf"] = "admin", "x"
    first = client.get("/jobs", base_url="https://localhost").get_data(as_text=True)
    assert made[-1].id in first and made[0].id not in first
    link = re.search(r'href="(/jobs\?after=[^"]+)" id="older-jobs"', first).group(1)
    second = client.get(link, base_url="https://localhost").get_data(as_text=True)
    assert made[0].id in second and made[-1].id not in second and 'id="older-jobs"' not in second
    assert client.get("/jobs?after=bogus", base_url="https://localhost").status_code == 302
