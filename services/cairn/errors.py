"""The one error tree of Cairn, and its mapping to HTTP status (the only place that maps).

    CairnError                      500  something we did not expect
    ├── ValidationError             400  bad input; every field error at once, keyed by path
    ├── AuthenticationError         401  no or wrong credentials
    ├── NotFound                    404  the named thing does not exist
    ├── Conflict                    409  the request contradicts current state (name taken, ...)
    │   ├── PreconditionFailed      409  a precondition is not met; nothing was changed
    │   └── Busy                    409  a lock is held by someone else; retry later
    ├── RateLimited                 429  too many attempts; retry after `retry_after` seconds
    ├── ExecutionError              500  failed half-way; `done` lists what was changed
    ├── CommandFailed               500  an external command failed (exit code; argv, stderr for logs)
    │   └── CommandTimeout          500  ... or did not finish in time
    └── Unavailable                 503  a dependency (etcd) cannot be reached

Errors carry a message meant for a person. `to_dict()` is what clients see: the code, the message
and the details a client can act on; never a stack trace, and never what a command was run with or
printed (`argv`, `stderr`: a path, a host name or a secret can be in them). Those stay on the
exception for the job log and the server log: `log_text()` gives the message with them.
"""

from __future__ import annotations

import os
from typing import Any

# Details kept for logs only: what a command was run with and what it printed.
LOG_ONLY_DETAILS = frozenset({"argv", "stderr"})
REASON_MAX = 200                 # characters of a command's last stderr line in its message


class CairnError(Exception):
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        public = {key: value for key, value in self.details.items() if key not in LOG_ONLY_DETAILS}
        if public:
            body["details"] = public
        return body

    def log_text(self) -> str:
        """The message with every detail, the log-only ones included (for the server and job logs)."""
        if not self.details:
            return self.message
        extra = "; ".join(f"{key}={value!r}" for key, value in sorted(self.details.items()))
        return f"{self.message} ({extra})"


class ValidationError(CairnError):
    """Bad input. `fields` maps a field path (e.g. "params.samples") to what is wrong with it."""

    code = "invalid"

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        if message is None:
            message = "; ".join(f"{path}: {problem}" for path, problem in sorted(fields.items()))
        super().__init__(message)
        self.fields = dict(fields)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["fields"] = self.fields
        return body


class AuthenticationError(CairnError):
    code = "unauthenticated"


class NotFound(CairnError):
    code = "not_found"


class Conflict(CairnError):
    code = "conflict"


class PreconditionFailed(Conflict):
    code = "precondition_failed"


class Busy(Conflict):
    code = "busy"


class RateLimited(CairnError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class ExecutionError(CairnError):
    code = "execution_failed"

    def __init__(self, message: str, done: list[str] | None = None) -> None:
        super().__init__(message, done=list(done or []))


class CommandFailed(CairnError):
    code = "command_failed"

    def __init__(self, argv: list[str], returncode: int, stderr: str, message: str | None = None):
        if message is None:
            message = f"{tool_name(argv)} exited with {returncode}"
            reason = last_line(stderr)
            if reason:
                message += f": {reason}"
        super().__init__(message, argv=list(argv), returncode=returncode, stderr=stderr[-4000:])
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class CommandTimeout(CommandFailed):
    code = "command_timeout"

    def __init__(self, argv: list[str], timeout: float, stderr: str = "") -> None:
        super().__init__(argv, -1, stderr, message=f"{tool_name(argv)} did not finish within {timeout:g} s")
        self.timeout = timeout


def tool_name(argv: list[str]) -> str:
    """The command's name without its directory (a message names the tool, not where it lives)."""
    return os.path.basename(str(argv[0])) if argv else "?"


def last_line(stderr: str, limit: int = REASON_MAX) -> str:
    """The last non-empty line of a command's stderr, cut to `limit` characters (a reason for a message)."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[:limit - 1] + "…"


class Unavailable(CairnError):
    code = "unavailable"


_STATUS_BY_CLASS: dict[type, int] = {
    ValidationError: 400,
    AuthenticationError: 401,
    NotFound: 404,
    Conflict: 409,
    RateLimited: 429,
    Unavailable: 503,
    CairnError: 500,
}


def http_status(error: CairnError) -> int:
    """HTTP status for an error: the nearest class in the tree that has one."""
    for cls in type(error).__mro__:
        if cls in _STATUS_BY_CLASS:
            return _STATUS_BY_CLASS[cls]
    return 500
