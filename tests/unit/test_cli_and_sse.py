"""Pure output helpers: cairnctl tables and the SSE messages the console follows."""

import json

from cairn.cli.main import table
from cairn.web.api import sse_message


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


def test_changes_clients_do_not_follow_send_nothing():
    assert sse_message("locks/disk:1", {"job": "j"}) is None
    assert sse_message("jobs/j1", None) is None
    assert sse_message("events/1", {"message": "m"}).startswith("event: event\n")
