"""What cairn-web checks before it trusts a request, piece by piece: JSON depth on raw bytes, log
text that stays on one line, body reads under a deadline (on real gevent sockets), and console
form numbers read as strictly as the API's fields."""

from __future__ import annotations

import logging

import gevent
import gevent.socket
import pytest
from werkzeug.exceptions import RequestTimeout

from cairn.errors import ValidationError
from cairn.web import forms, guards
from cairn.web.server import OneLineFormatter


def test_json_nested_deeper_than_the_limit_is_caught_without_recursion():
    assert guards.json_too_deep(b"[" * 100_000) is True
    assert guards.json_too_deep(b'{"a":' * 100_000) is True
    assert guards.json_too_deep(b"[" * 32 + b"]" * 32) is False
    assert guards.json_too_deep(b"[" * 33 + b"]" * 33) is True
    assert guards.json_too_deep(b"[[1],[2],[3]]" * 1000, limit=2) is False       # wide is fine


def test_brackets_inside_strings_do_not_count():
    assert guards.json_too_deep(b'{"a": "' + b"[" * 1000 + b'"}', limit=2) is False
    assert guards.json_too_deep(b'["\\"[[[[", "x"]', limit=1) is False             # an escaped quote
    assert guards.json_too_deep(b'[["\\\\"], [[]]]', limit=2) is True               # an escaped backslash ends it


def test_printable_escapes_what_would_start_a_new_log_line():
    assert guards.printable("/api/v1/x\n2026-01-01 forged\r\x1b[31m") == "/api/v1/x\\x0a2026-01-01 forged\\x0d\\x1b[31m"
    assert guards.printable("a\u2028b\x85c") == "a\\u2028b\\x85c"
    assert guards.printable("/vms/é-ok") == "/vms/é-ok"


def test_a_logged_path_with_a_newline_stays_one_line():
    record = logging.LogRecord("cairn.web", logging.WARNING, __file__, 1, "%s %s failed: %s",
                               ("GET", "/api/v1/x\nFORGED line", "down"), None)
    text = OneLineFormatter(logging.Formatter("%(levelname)s %(message)s")).format(record)
    assert text == "WARNING GET /api/v1/x\\x0aFORGED line failed: down"
    assert record.getMessage() == "GET /api/v1/x\nFORGED line failed: down"    # other handlers see it as it was


def deadline_pair(idle: float, deadline: float | None):
    client, server = gevent.socket.socketpair()
    return client, guards.DeadlineInput(server.makefile("rb"), idle, deadline, gevent.Timeout)


def test_a_body_that_stalls_is_a_408_after_the_idle_time():
    client, body = deadline_pair(idle=0.2, deadline=None)
    client.sendall(b"abc")
    assert body.read(3) == b"abc"
    started = gevent.get_hub().loop.now()
    with pytest.raises(RequestTimeout, match="no data for 0.2 s"):
        body.read(3)                                        # nothing more comes
    assert 0.15 < gevent.get_hub().loop.now() - started < 2


def test_a_body_past_its_deadline_is_a_408_at_once():
    clock = [100.0]
    client, server = gevent.socket.socketpair()
    body = guards.DeadlineInput(server.makefile("rb"), 10.0, 105.0, gevent.Timeout, clock=lambda: clock[0])
    client.sendall(b"abcdef")
    assert body.read(3) == b"abc"
    clock[0] = 106.0
    with pytest.raises(RequestTimeout, match="did not arrive within"):
        body.read(3)


def test_a_lifted_deadline_leaves_only_the_idle_limit():
    client, body = deadline_pair(idle=5.0, deadline=0.0)
    environ = {"wsgi.input": body}
    guards.lift_deadline(environ)
    client.sendall(b"xyz")
    assert body.read(3) == b"xyz" and body.deadline is None


@pytest.mark.parametrize("value, expected", [("", 1024), ("2048", 2048), (" 64 ", 64), ("0", 0)])
def test_form_whole_numbers(value, expected):
    assert forms.whole_number({"memory_mib": value}, "memory_mib", 1024) == expected


@pytest.mark.parametrize("value", ["²", "٣", "１２", "12a", "-1", "1.5", "1e3", "9" * 16])
def test_a_form_field_that_is_no_whole_number_is_a_400_naming_it(value):
    with pytest.raises(ValidationError) as caught:
        forms.whole_number({"memory_mib": value}, "memory_mib", 1024)
    assert {"memory_mib": "must be a whole number (digits 0-9)"} == caught.value.fields


@pytest.mark.parametrize("value, expected", [("", None), ("1.5", 1.5), ("10", 10.0), (".5", 0.5)])
def test_form_decimals(value, expected):
    assert forms.decimal_number({"quota_gib": value}, "quota_gib") == expected


@pytest.mark.parametrize("value", ["nan", "inf", "1e3", "1.2.3", "½", "-2"])
def test_a_form_field_that_is_no_decimal_is_a_400_naming_it(value):
    with pytest.raises(ValidationError) as caught:
        forms.decimal_number({"quota_gib": value}, "quota_gib")
    assert list(caught.value.fields) == ["quota_gib"]
