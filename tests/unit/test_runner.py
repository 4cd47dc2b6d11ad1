"""The one command runner: argv only, captured output, exit codes, timeouts, daemons."""

import signal
import time

import pytest

from cairn.errors import CommandFailed, CommandTimeout
from cairn.runner import Runner
from fakes import RecordingRunner


def test_run_captures_stdout_stderr_code_and_duration():
    result = Runner().run(["sh", "-c", "echo out; echo err >&2; exit 0"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 0")
    assert 0 <= result.duration < 5


def test_nonzero_exit_raises_command_failed_with_argv_code_and_stderr():
    with pytest.raises(CommandFailed) as caught:
        Runner().run(["sh", "-c", "echo boom >&2; exit 3"])
    assert caught.value.argv == ["sh", "-c", "echo boom >&2; exit 3"]
    assert caught.value.returncode == 3
    assert caught.value.stderr == "boom\n"
    assert caught.value.message == "sh exited with 3: boom"


def test_check_false_returns_the_code_for_callers_that_decode_it():
    assert Runner().run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_input_reaches_stdin_and_as_a_file_can_be_read_twice_where_a_pipe_cannot():
    twice = ["sh", "-c", "cat /dev/stdin; cat /dev/stdin"]
    assert Runner().run(twice, input="secret\n").stdout == "secret\n"          # a pipe is drained
    assert Runner().run(twice, input="secret\n", input_file=True).stdout == "secret\nsecret\n"


def test_timeout_raises_command_timeout():
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        Runner().run(["sleep", "5"], timeout=0.3)
    assert time.monotonic() - started < 3
    assert "did not finish within 0.3 s" in caught.value.message


def test_missing_command_is_exit_127():
    with pytest.raises(CommandFailed) as caught:
        Runner().run(["no-such-command-cairn"])
    assert caught.value.returncode == 127


@pytest.mark.parametrize("bad", ["echo hi", b"echo", [], ["echo", 3]])
def test_argv_must_be_a_list_of_strings(bad):
    with pytest.raises(TypeError):
        Runner().run(bad)


def test_input_is_passed_on_stdin():
    assert Runner().run(["cat"], input="hello").stdout == "hello"


def test_spawned_daemon_logs_and_stops(tmp_path):
    log = tmp_path / "d.log"
    daemon = Runner().spawn(["sh", "-c", "echo started; exec sleep 30"], log_path=log)
    deadline = time.monotonic() + 5
    while "started" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemon.alive()
    assert daemon.stop(timeout=5) == -signal.SIGTERM
    assert not daemon.alive()
    assert log.read_text() == "started\n"


def test_recording_runner_records_and_fails_like_the_real_one():
    fake = RecordingRunner({("mdadm", "--detail", "/dev/md0"): (1, "", "no such array")})
    with pytest.raises(CommandFailed) as caught:
        fake.run(["mdadm", "--detail", "/dev/md0"])
    assert fake.calls == [("mdadm", "--detail", "/dev/md0")]
    assert caught.value.returncode == 1
