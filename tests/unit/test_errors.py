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


def test_command_failed_tells_clients_tool_code_and_last_stderr_line_only():
    error = errors.CommandFailed(["/usr/sbin/mdadm", "--create", "/dev/md/secret-name"], 2,
                                 "warning: /dev/sdq is odd\nmdadm: device busy\n\n")
    assert error.to_dict() == {"code": "command_failed", "message": "mdadm exited with 2: mdadm: device busy",
                               "details": {"returncode": 2}}
    # The whole argv and stderr stay on the exception, for the job log and the server log.
    assert (error.argv, error.stderr) == (["/usr/sbin/mdadm", "--create", "/dev/md/secret-name"],
                                          "warning: /dev/sdq is odd\nmdadm: device busy\n\n")
    assert "/dev/md/secret-name" in error.log_text() and "/dev/sdq is odd" in error.log_text()


def test_command_failed_cuts_a_long_last_line_and_a_timeout_names_the_tool():
    error = errors.CommandFailed(["qemu-img"], 1, "x" * 5000)
    assert len(error.message) <= len("qemu-img exited with 1: ") + errors.REASON_MAX
    assert error.message.endswith("…") and "x" * 5000 not in str(error.to_dict())
    timeout = errors.CommandTimeout(["/usr/bin/btrfs", "scrub", "/pools/tank"], 5.0, "partial output")
    assert timeout.to_dict() == {"code": "command_timeout", "message": "btrfs did not finish within 5 s",
                                 "details": {"returncode": -1}}


def test_any_error_keeps_argv_and_stderr_details_out_of_what_clients_see():
    busy = errors.Busy("btrfs balance start refused: busy", argv=["btrfs", "balance", "start", "/pools/x"],
                       returncode=1, stderr="ERROR: another exclusive operation", pool="x")
    assert busy.to_dict() == {"code": "busy", "message": "btrfs balance start refused: busy",
                              "details": {"returncode": 1, "pool": "x"}}


def test_execution_error_says_what_was_done():
    assert errors.ExecutionError("failed at step 2", done=["created a"]).to_dict()["details"] == {
        "done": ["created a"]}
