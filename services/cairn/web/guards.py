"""What cairn-web does to a request before it trusts it: limits on bodies, on JSON and on time, and
log text that cannot be forged.

Order (app._gate, then app._check_body): the route's body cap is set, then credentials are checked
from the headers alone; only then may anything read the body. So an unauthenticated request costs
no more than its headers whatever it sends, and a 401 goes out before its body is read.

- Body caps (bytes) per endpoint: BODY_CAPS, else DEFAULT_BODY_CAP. A larger Content-Length, or a
  chunked body that grows past the cap while it is read, is refused with 413. Uploads
  (STREAMED_ENDPOINTS) are files streamed to disk by their view: their cap is UPLOAD_CAP.
- JSON: at most MAX_JSON_DEPTH levels of arrays and objects (`json_too_deep`, checked on the raw
  bytes before any parser recurses into them).
- Time (`DeadlineInput`, installed by the server around every request's wsgi.input): each read
  of the body must get its bytes within BODY_IDLE_SECONDS, and a capped body must be whole within
  BODY_SECONDS of the request's start; otherwise 408. Headers are bounded by gunicorn's
  keepalive timeout and the TLS handshake by server.HANDSHAKE_SECONDS. (After an answer given
  before the body was read, gunicorn drains what is left for at most that keepalive time, then
  drops the connection.)
- Logs: `printable` escapes control characters (a %0A in a path is a newline once decoded), so
  one log record is one line.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterator

from werkzeug.exceptions import RequestTimeout

DEFAULT_BODY_CAP = 1 << 20                  # JSON bodies and console forms
LOGIN_BODY_CAP = 16 << 10                   # public: anyone may send these
UPLOAD_CAP = 1 << 42                        # 4 TiB: image uploads, streamed to disk after auth
STREAMED_ENDPOINTS = {"images.upload_image"}
BODY_CAPS = {"api.login": LOGIN_BODY_CAP, "console.login_post": LOGIN_BODY_CAP,
             **{endpoint: UPLOAD_CAP for endpoint in STREAMED_ENDPOINTS}}
MAX_JSON_DEPTH = 32
BODY_IDLE_SECONDS = 10.0
BODY_SECONDS = 30.0


def body_cap(endpoint: str | None) -> int:
    return BODY_CAPS.get(endpoint or "", DEFAULT_BODY_CAP)


# --- JSON depth (pure) -------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENERS = frozenset(b"[{")


def json_too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` deep. Strings are taken
    out first (a bracket inside one does not count); the text need not be valid JSON."""
    depth = 0
    for char in _JSON_STRING.sub(b'""', data).translate(None, _NOT_BRACKETS):
        if char in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False


# --- log text (pure) ---------------------------------------------------------------------------
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: Any) -> str:
    """text with control characters (newlines above all) written as \\xNN or \\uNNNN escapes, so
    that what a client put in a path or header cannot start a log line of its own."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", str(text))


# --- body read deadlines ----------------------------------------------------------------------
class DeadlineInput:
    """A request's wsgi.input with time limits. Each read must finish within `idle` seconds and,
    while `deadline` (a time.monotonic() value) is set, before it; otherwise RequestTimeout (408).
    `timeout(seconds, exception)` arms a timer that raises exception in the reading task (gevent's
    Timeout under the gevent worker); the view that streams an upload lifts the deadline."""

    def __init__(self, raw, idle: float, deadline: float | None,
                 timeout: Callable[[float, BaseException], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.raw = raw
        self.idle = idle
        self.deadline = deadline
        self.timeout = timeout
        self.clock = clock

    def _limited(self, method, *args):
        wait = self.idle
        if self.deadline is not None:
            wait = min(wait, self.deadline - self.clock())
        if wait <= 0:
            raise RequestTimeout(f"the request body did not arrive within {BODY_SECONDS:g} s")
        with self.timeout(wait, RequestTimeout(f"the request body stalled: no data for {wait:g} s")):
            return method(*args)

    def read(self, size: int | None = -1) -> bytes:
        return self._limited(self.raw.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._limited(self.raw.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self._limited(self.raw.readlines, hint)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class BodyDeadlines:
    """WSGI middleware: every request's body is read under DeadlineInput's limits."""

    def __init__(self, app, timeout: Callable[[float, BaseException], Any], idle: float = BODY_IDLE_SECONDS,
                 total: float = BODY_SECONDS) -> None:
        self.app = app
        self.timeout = timeout
        self.idle = idle
        self.total = total

    def __call__(self, environ, start_response):
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], self.idle, time.monotonic() + self.total,
                                              self.timeout)
        return self.app(environ, start_response)


def lift_deadline(environ: dict[str, Any]) -> None:
    """No overall deadline for this request's body (a streamed upload: only the idle limit stays)."""
    body = environ.get("wsgi.input")
    if isinstance(body, DeadlineInput):
        body.deadline = None
