"""cairn-web entry point: make TLS material and the admin user on first start, then serve the app
with gunicorn (threaded workers, so Server-Sent Event streams don't block other requests)."""

from __future__ import annotations

import argparse
import logging
import socket
import time

from gunicorn.app.base import BaseApplication

from cairn import config as config_mod
from cairn.cluster.store import Store
from cairn.errors import Unavailable
from cairn.system.tls import ensure_tls
from cairn.web.app import create_app
from cairn.web.auth import Auth

log = logging.getLogger("cairn.web")

STORE_WAIT_SECONDS = 120


class _Gunicorn(BaseApplication):
    def __init__(self, app, options: dict) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cairn-web", description="Cairn web console and API")
    parser.add_argument("--config", help="config file (default $CAIRN_CONFIG or /etc/cairn/cairn.toml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_mod.load(args.config)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    tls = ensure_tls(cfg.state_dir, socket.gethostname(), [cfg.node_name])
    store = Store(cfg.etcd_endpoints, cfg.store_root)
    prepare(cfg, store)
    app = create_app(cfg, store)
    _Gunicorn(app, {
        "bind": cfg.web.bind,
        "workers": cfg.web.workers,
        "worker_class": "gthread",
        "threads": cfg.web.threads,
        "certfile": str(tls.cert),
        "keyfile": str(tls.key),
        "accesslog": "-",
        "timeout": 60,
        "graceful_timeout": 5,
        "proc_name": "cairn-web",
        "control_socket_disable": True,
        "post_fork": lambda server, worker: store.reset_connections(),
    }).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
