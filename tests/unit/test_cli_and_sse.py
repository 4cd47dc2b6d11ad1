"""Pure output helpers: cairnctl tables and the SSE messages the console follows; the event
streams' backlog: ids, replay after a Last-Event-ID, and what is too old to replay."""

import json

from cairn.cli.main import table
from cairn.web.streams import END, Backlog, event_id, parse_event_id, sse_message, start_position


def test_table_aligns_columns_and_renders_values():
    text = table([{"name": "a", "online": True, "cpus": 2}, {"name": "bbb", "online": False, "cpus": None}],
                 [("NAME", "name"), ("ONLINE", "online"), ("CPUS", "cpus")])
    assert text.splitlines() == ["NAME  ONLINE  CPUS", "a     yes     2", "bbb   no      -"]


def test_job_change_becomes_a_job_message_without_the_full_log():
    message = sse_message("jobs/j1", {"id": "j1", "progress": 50, "log": [{"time": 1, "message": "a"},
                                                                           {"time": 2, "message": "b"}]})
    kind, data = message.strip().split("\n")
    assert kind == "event: job"
    assert json.loads(data.removeprefix("data: ")) == {"id": "j1", "progress": 50, "last_log": "b"}
    record = sse_message("jobs/j2", {"id": "j2", "progress": 5, "last_log": "c", "log_count": 3})
    assert {"id": "j2", "progress": 5, "last_log": "c", "log_count": 3} == json.loads(
        record.strip().split("\n")[1].removeprefix("data: "))


def test_changes_clients_do_not_follow_send_nothing():
    assert sse_message("locks/disk:1", {"job": "j"}) is None
    assert sse_message("jobs/j1", None) is None
    assert sse_message("events/1", {"message": "m"}).startswith("event: event\n")


def backlog_with(changes: list[tuple[int, str | None]], capacity: int = 100, first: int = 10) -> Backlog:
    """A backlog that began at revision `first` and saw (revision, key or None for an unfollowed change)."""
    backlog = Backlog(capacity, covered_after=(first - 1, END), seen=(first - 1, END))
    for revision, key in changes:
        backlog.note(revision, None if key is None else sse_message(key, {"key": key}))
    return backlog


def ids(messages) -> list[str]:
    return [m.text.split("\n", 1)[0] for m in messages]


def test_each_message_carries_its_revision_as_id():
    backlog = backlog_with([(10, "jobs/a"), (11, "locks/x"), (12, "events/e"), (12, "jobs/b")])
    assert ["id: 10", "id: 12", "id: 12.1"] == ids(backlog.after((9, END)))
    assert backlog.messages[0].text == 'id: 10\nevent: job\ndata: {"key": "jobs/a", "last_log": null}\n\n'
    assert (12, 1) == backlog.seen


def test_a_last_event_id_replays_only_what_came_after_it():
    backlog = backlog_with([(10, "jobs/a"), (11, "jobs/b"), (12, "events/e"), (12, "jobs/c"), (13, "nodes/n")])
    assert ["id: 12", "id: 12.1", "id: 13"] == ids(backlog.after(parse_event_id("11")))
    assert ["id: 12.1", "id: 13"] == ids(backlog.after(parse_event_id("12")))
    assert ["id: 13"] == ids(backlog.after(parse_event_id("12.1")))
    assert [] == backlog.after(parse_event_id("13"))
    assert [] == backlog.after(parse_event_id("99"))          # ahead of this process: wait for more


def test_since_means_everything_of_that_revision_was_seen():
    backlog = backlog_with([(10, "jobs/a"), (11, "jobs/b"), (11, "jobs/c")])
    assert ["id: 10", "id: 11", "id: 11.1"] == ids(backlog.after(start_position(None, 9)))
    assert [] == backlog.after(start_position(None, 11))
    assert ["id: 11.1"] == ids(backlog.after(start_position("11", 3)))    # the header wins over ?since


def test_a_position_older_than_what_is_kept_is_refused():
    backlog = backlog_with([(10, "jobs/a")], first=10)
    assert backlog.after((8, END)) is None                    # revision 9 happened before the watch began
    assert ["id: 10"] == ids(backlog.after((9, END)))
    full = backlog_with([(revision, "jobs/a") for revision in range(10, 20)], capacity=4)
    assert ["id: 16", "id: 17", "id: 18", "id: 19"] == ids(full.messages)
    assert full.after(parse_event_id("14")) is None           # 15 was evicted
    assert ["id: 16", "id: 17", "id: 18", "id: 19"] == ids(full.after(parse_event_id("15")))


def test_ids_this_server_never_sent_are_ignored():
    assert [None, None, None, (7, 0), (7, 2)] == [parse_event_id(text) for text in
                                                    (None, "", "abc", "7", "7.2")]
    assert parse_event_id("1e3") is None and parse_event_id("-1") is None
    assert None is start_position("garbage", None)
    assert ["7", "7.2"] == [event_id((7, 0)), event_id((7, 2))]


def test_changes_compacted_away_before_the_hub_saw_them_make_older_positions_reload():
    backlog = backlog_with([(10, "jobs/a"), (11, "jobs/b")], first=10)
    backlog.lost(15)                                          # 12..14 are gone from the store
    assert backlog.after(parse_event_id("11")) is None        # it would miss 12..14: reload
    assert backlog.after((14, END)) == []                     # stood past the gap: nothing missed
    assert backlog.seen == (14, END)
