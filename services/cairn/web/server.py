"""cairn-web entry point: make TLS material and the admin user on first start, then serve the app
with gunicorn's gevent worker.

Why gevent: event streams (SSE) and VM consoles (a WebSocket relay) stay open for minutes. With
threaded workers each held a thread, and a few dozen of them left none for anything else. Under
the gevent worker every connection is a greenlet: an open stream or console waits on its socket
and costs a little memory, never a request worker. Slow clients are bounded by time instead of
by threads: the TLS handshake (HANDSHAKE_SECONDS), the request headers (gunicorn's keepalive
timeout) and the body (cairn.web.guards.DeadlineInput).

Monkey-patching comes first: the entry point (cairn.web.serve) patches the standard library before
this module is imported, so ssl is patched before the store client imports it (etcd over mutual
TLS needs that); gunicorn's gevent worker patches again at its start, which changes nothing. The
master only prepares (store schema, admin user) and starts gunicorn; each worker builds its own
app, store client and event hub (`_Gunicorn.load`), so every lock, socket and thread they make is
the worker's own. Password checks (argon2) go to gevent's thread
pool (cairn.web.app.off_the_loop).

Logs: every handler (ours and gunicorn's error and access logs) writes one line per record:
control characters in a message are escaped (guards.printable).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import gevent
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from cairn import config as config_mod
from cairn.cluster.store import Store
from cairn.errors import Unavailable
from cairn.system.tls import console_tls
from cairn.web import guards
from cairn.web.app import create_app, services
from cairn.web.auth import Auth

log = logging.getLogger("cairn.web")

STORE_WAIT_SECONDS = 120
HANDSHAKE_SECONDS = 10.0
KEEPALIVE_SECONDS = 5


class OneLineFormatter(logging.Formatter):
    """Another formatter's output with the message's control characters escaped (the traceback of
    a logged exception keeps its lines)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        record = copy.copy(record)
        record.msg, record.args = guards.printable(record.getMessage()), None
        return self.inner.format(record)


def one_line_logs(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if not isinstance(handler.formatter, OneLineFormatter):
            handler.setFormatter(OneLineFormatter(handler.formatter))


class _Logger(GunicornLogger):
    """gunicorn's error and access logs, one line per record."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            one_line_logs(logger)


class _HandshakeDeadline:
    """The worker's TLS context (gunicorn's `ssl_context` hook) with a time limit on the handshake:
    a client that connects and says nothing would otherwise hold a connection slot for ever. A
    handshake that fails or times out ends that connection's greenlet quietly."""

    def __init__(self, context, seconds: float) -> None:
        self.context = context
        self.seconds = seconds

    def __getattr__(self, name: str):
        return getattr(self.context, name)

    def wrap_socket(self, sock, **kwargs):
        sock.settimeout(self.seconds)
        try:
            wrapped = self.context.wrap_socket(sock, **kwargs)
        except OSError as exc:                    # ssl.SSLError and timeouts are OSErrors
            log.debug("TLS handshake failed: %s", exc)
            sock.close()
            raise gevent.GreenletExit() from None
        wrapped.settimeout(None)
        return wrapped


def _ssl_context(config, default_factory):
    return _HandshakeDeadline(default_factory(), HANDSHAKE_SECONDS)


class _Gunicorn(BaseApplication):
    def __init__(self, cfg: config_mod.Config, options: dict) -> None:
        self.cairn_cfg = cfg
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """In each worker, after gevent's patch: the app with its own store client and event hub."""
        cfg = self.cairn_cfg
        if cfg.path:
            # A reload (SIGHUP, sent by a cluster job) starts new workers: they read the settings
            # as they are now (the cluster's store endpoints and TLS files).
            cfg = config_mod.load(cfg.path)
        app = create_app(cfg, config_mod.open_store(cfg))
        app.wsgi_app = guards.BodyDeadlines(app.wsgi_app, gevent.Timeout)
        return app


def _start_hub(worker) -> None:
    """Each worker watches the store from its start, so streams can replay from then on."""
    try:
        services(worker.wsgi)["hub"].start()
    except Unavailable as exc:
        log.warning("event hub not started yet (the first stream starts it): %s", exc.message)


def prepare(cfg: config_mod.Config, store: Store) -> None:
    """First-start work: the admin user (password in <state_dir>/admin-password) and the session key."""
    deadline = time.monotonic() + STORE_WAIT_SECONDS
    while True:
        try:
            store.ensure_schema()
            auth = Auth(store)
            if auth.ensure_admin(cfg.state_dir / "admin-password"):
                log.info("created user admin; password in %s", cfg.state_dir / "admin-password")
            auth.session_secret()
            return
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for the cluster store: %s", exc.message)
            time.sleep(2)


def options(cfg: config_mod.Config, cert: str, key: str) -> dict:
    return {
        "bind": cfg.web.bind,
        "workers": cfg.web.workers,
        "worker_class": "gevent",
        "worker_connections": cfg.web.connections,
        "keepalive": KEEPALIVE_SECONDS,
        "certfile": cert,
        "keyfile": key,
        "ssl_context": _ssl_context,
        "accesslog": "-",
        "logger_class": _Logger,
        "timeout": 60,
        "graceful_timeout": 5,
        "proc_name": "cairn-web",
        "pidfile": str(cfg.state_dir / "web.pid"),
        "control_socket_disable": True,
        "post_worker_init": _start_hub,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cairn-web", description="Cairn web console and API")
    parser.add_argument("--config", help="config file (default $CAIRN_CONFIG or /etc/cairn/cairn.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    one_line_logs(logging.getLogger())
    cfg = config_mod.load(args.config)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tls = console_tls(cfg.state_dir, cfg.node_name, cfg.web.bind)
    prepare(cfg, config_mod.open_store(cfg))
    _Gunicorn(cfg, options(cfg, str(tls.cert), str(tls.key))).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
