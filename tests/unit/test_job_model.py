"""The job state machine: allowed transitions, terminal states, progress and log rules."""

import pytest

from cairn.errors import Conflict
from cairn.jobs import model
from cairn.jobs.model import Job, JobState


def job(**kw):
    return Job(id="j1", kind="node.diagnostics", node="n1", params={}, **kw)


def test_happy_path_queued_running_success():
    j = model.advance(job(), model.Start(10.0))
    assert (j.state, j.started_at) == (JobState.RUNNING, 10.0)
    j = model.advance(j, model.Progress(11.0, 40, "step two", "did step one"))
    assert (j.progress, j.description, j.log[-1].message) == (40, "step two", "did step one")
    j = model.advance(j, model.Succeed(12.0, {"x": 1}))
    assert (j.state, j.progress, j.result, j.finished_at) == (JobState.SUCCESS, 100, {"x": 1}, 12.0)


def test_failure_and_abort_record_why():
    running = model.advance(job(), model.Start(1.0))
    assert model.advance(running, model.Fail(2.0, "disk gone")).error == "disk gone"
    aborted = model.advance(running, model.Abort(2.0, "aborted on request"))
    assert (aborted.state, aborted.error) == (JobState.ABORTED, "aborted on request")
    assert model.advance(job(), model.Abort(1.0, "before start")).state is JobState.ABORTED


@pytest.mark.parametrize("state", [JobState.SUCCESS, JobState.FAILED, JobState.ABORTED])
@pytest.mark.parametrize("event", [model.Start(1.0), model.Progress(1.0, 5), model.Succeed(1.0),
                                   model.Fail(1.0, "x"), model.Abort(1.0, "x")])
def test_terminal_states_take_no_event(state, event):
    with pytest.raises(Conflict):
        model.advance(job(state=state), event)


def test_queued_job_cannot_report_progress_or_succeed():
    for event in (model.Progress(1.0, 5), model.Succeed(1.0)):
        with pytest.raises(Conflict):
            model.advance(job(), event)


def test_unknown_state_raises_at_once():
    broken = job()
    object.__setattr__(broken, "state", "exploded")
    with pytest.raises(ValueError):
        model.advance(broken, model.Start(1.0))


def test_progress_is_clamped_and_log_is_capped():
    j = model.advance(job(), model.Start(0.0))
    assert model.advance(j, model.Progress(1.0, 250)).progress == 100
    assert model.advance(j, model.Progress(1.0, -3)).progress == 0
    for i in range(model.MAX_LOG_LINES + 50):
        j = model.advance(j, model.Progress(float(i), message=f"line {i}"))
    assert len(j.log) == model.MAX_LOG_LINES
    assert j.log[-1].message == f"line {model.MAX_LOG_LINES + 49}"


def test_waiting_for_a_lock_is_visible():
    j = model.advance(job(), model.Wait("disk:S1", "j0"))
    assert (j.state, j.waiting_for, j.description) == (JobState.QUEUED, "disk:S1",
                                                         "waiting for lock disk:S1 (held by j0)")


def test_record_round_trips_through_dict():
    j = model.advance(model.advance(job(locks=("a",), abortable=True), model.Start(1.0)),
                      model.Progress(2.0, 50, "half", "hello"))
    assert Job.from_dict(j.to_dict()) == j
    assert "log" not in model.summary(j)


def test_job_ids_sort_by_creation_time():
    assert model.new_job_id(1_000_000.0) < model.new_job_id(2_000_000.0)
