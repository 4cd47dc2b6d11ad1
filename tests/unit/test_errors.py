"""One error tree, mapped to HTTP status in one place; error bodies name the fields at fault."""

import pytest

from cairn import errors
from cairn.errors import http_status


@pytest.mark.parametrize("error, status", [
    (errors.ValidationError({"name": "is required"}), 400),
    (errors.AuthenticationError("no"), 401),
    (errors.NotFound("gone"), 404),
    (errors.Conflict("taken"), 409),
    (errors.PreconditionFailed("not now"), 409),
    (errors.Busy("locked"), 409),
    (errors.RateLimited("slow down", 30), 429),
    (errors.ExecutionError("half", done=["a"]), 500),
    (errors.CommandFailed(["x"], 1, ""), 500),
    (errors.CommandTimeout(["x"], 1.0), 500),
    (errors.Unavailable("etcd down"), 503),
    (errors.CairnError("?"), 500),
])
def test_each_error_maps_to_its_status(error, status):
    assert http_status(error) == status


def test_validation_error_lists_every_field():
    error = errors.ValidationError({"params.samples": "too big", "node": "unknown"})
    assert error.to_dict() == {
        "code": "invalid",
        "message": "node: unknown; params.samples: too big",
        "fields": {"params.samples": "too big", "node": "unknown"},
    }


def test_command_failed_says_argv_code_and_last_stderr_line():
    error = errors.CommandFailed(["mdadm", "--create"], 2, "warning\nmdadm: device busy\n")
    assert error.message == "mdadm exited with 2: mdadm: device busy"
    assert error.to_dict()["details"]["argv"] == ["mdadm", "--create"]


def test_execution_error_says_what_was_done():
    assert errors.ExecutionError("failed at step 2", done=["created a"]).to_dict()["details"] == {
        "done": ["created a"]}
