"""cairn-web's Flask application (APIFlask, so /api/v1 is described by an OpenAPI document).

Request gate (one place, and first): the route's body cap is set (cairn.web.guards), then every
/api/v1 route except login and health needs a bearer token or a console session; unsafe requests on
a session also need its CSRF token (header X-CSRF-Token or form field csrf_token). Console pages
redirect to /login instead. Nothing reads a request's body before the gate has passed it: an
unauthenticated request is answered from its headers alone. Then JSON bodies are checked (depth,
syntax) before any view parses them.

Errors: CairnError subclasses become JSON {"error": {...}} with the status from cairn.errors;
anything unexpected becomes a 500 with no stack trace. The web process never dies because etcd is
down: store calls raise Unavailable → 503, which says only "cluster store unreachable" (the
endpoints and the reason go to the log); a cluster node says it is cut off from the cluster's
quorum and refuses changes until it is back. Request paths in log lines are escaped (guards.printable).

Password checks (argon2, CPU-bound) run on gevent's thread pool under the gevent worker, so a login
does not stall the other requests of its worker.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import time
from typing import Any

import gevent
from apiflask import APIFlask
from apiflask.exceptions import HTTPError
from flask import Response, current_app, g, jsonify, redirect, render_template, request, session, url_for
from gevent import monkey
from werkzeug.exceptions import HTTPException

from cairn import __version__, config as config_mod
from cairn.cluster.store import Store
from cairn.config import Config
from cairn.errors import (AuthenticationError, CairnError, RateLimited, Unavailable, ValidationError,
                          http_status)
from cairn.jobs import registry
from cairn.jobs.service import JobService
from cairn.web import guards, schemas, streams
from cairn.web.auth import Auth, check_password

log = logging.getLogger("cairn.web")

API_PREFIX = "/api/v1"
# The cluster CA is public: a joining node compares it with its token's fingerprint before it
# trusts anything, and a user fetches it to trust every node's console.
# A join request is authenticated by its join token (a node asks, not a user).
PUBLIC_ENDPOINTS = {"api.login", "api.health", "api.cluster_ca", "api.join_request", "console.login",
                    "console.login_post", "static"}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def create_app(cfg: Config, store: Store | None = None) -> APIFlask:
    app = APIFlask("cairn.web", title="Cairn API", version=__version__,
                   spec_path=f"{API_PREFIX}/openapi.json", docs_path=None)
    app.config.update(
        VALIDATION_ERROR_STATUS_CODE=400,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="cairn_session",
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(hours=12),
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=guards.DEFAULT_BODY_CAP,     # the gate sets each route's own cap
        SECURITY_SCHEMES={"token": {"type": "http", "scheme": "bearer"},
                          "session": {"type": "apiKey", "in": "cookie", "name": "cairn_session"}},
        INFO={"description": "Cairn cluster API. Log in with POST /api/v1/auth/login to get a bearer "
                             "token. Errors are JSON: {\"error\": {\"code\", \"message\", \"fields\"?}}."},
        # What the error answers really look like (error_response), for every documented 4xx/5xx.
        HTTP_ERROR_SCHEMA=schemas.ErrorOut,
        VALIDATION_ERROR_SCHEMA=schemas.ErrorOut,
    )
    store = store or config_mod.open_store(cfg)
    app.extensions["cairn"] = {"cfg": cfg, "store": store, "auth": Auth(store, verify=off_the_loop(check_password)),
                               "jobs": JobService(store), "hub": streams.EventHub(store),
                               "config_stamp": _config_stamp(cfg.path), "config_checked": time.monotonic()}
    registry.load_all()
    _load_secret_key(app)

    from cairn.web import (api, api_images, api_iscsi, api_shares, api_storage, api_vms, console,
                           console_cluster, console_images, console_shares, console_storage, console_vms)
    app.register_blueprint(api.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_storage.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_shares.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_iscsi.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_vms.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_images.bp, url_prefix=API_PREFIX)
    app.spec_processor(api_images.document_upload_body)
    app.register_blueprint(console.bp)
    app.register_blueprint(console_cluster.bp)
    app.register_blueprint(console_storage.bp)
    app.register_blueprint(console_shares.bp)
    app.register_blueprint(console_vms.bp)
    app.register_blueprint(console_images.bp)
    app.before_request(_follow_config)      # before the gate, which reads the store
    app.before_request(_gate)               # first to read the request: nothing may read the body before it
    app.before_request(_check_body)
    _install_error_handlers(app)

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {"csrf_token": session.get("csrf", ""), "user": session.get("user"),
                "store_revision": g.get("store_revision", 0),
                "node_name": cfg.node_name, "version": __version__}

    return app


CONFIG_CHECK_SECONDS = 1.0


def _config_stamp(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except OSError:
        return None


def _follow_config() -> None:
    """When a cluster job rewrote this node's settings (its store moved to the cluster address and
    mutual TLS, or into the cluster's store on a join), this worker follows before its next
    request, at most a second late: the reload the job sends replaces the worker, but until then
    it still answers (keep-alive connections), and must not answer from the old store."""
    svc = services()
    now = time.monotonic()
    if now - svc["config_checked"] < CONFIG_CHECK_SECONDS or not svc["cfg"].path:
        return
    svc["config_checked"] = now
    stamp = _config_stamp(svc["cfg"].path)
    if stamp is None or stamp == svc["config_stamp"]:
        return
    svc["config_stamp"] = stamp
    new = config_mod.load(svc["cfg"].path)
    old = svc["cfg"]
    svc["cfg"] = new
    if (new.etcd_endpoints, config_mod.store_tls(new)) != (old.etcd_endpoints, config_mod.store_tls(old)):
        log.info("settings changed: the cluster store is now at %s", ", ".join(new.etcd_endpoints))
        svc["store"].reconfigure(new.etcd_endpoints, config_mod.store_tls(new))
        _load_secret_key(current_app)        # a joined node's sessions are the cluster's


def _load_secret_key(app: APIFlask) -> None:
    """The session signing key lives in the store so every node and worker shares it. If the store
    is down at start, sessions work once it is back (first request retries)."""
    try:
        app.secret_key = services(app)["auth"].session_secret()
    except Unavailable:
        app.secret_key = None


def services(app=None) -> dict[str, Any]:
    return (app or current_app).extensions["cairn"]


def off_the_loop(function):
    """`function` run on gevent's thread pool when this process runs under gevent (the worker has
    patched the standard library), else called directly. For CPU-bound calls that release the GIL."""
    def call(*args):
        if monkey.is_module_patched("threading"):
            return gevent.get_hub().threadpool.apply(function, args)
        return function(*args)
    return call


def _check_body() -> None:
    """After the gate: a JSON body that nests too deep or does not parse is named as the problem
    (not a bare 'Bad Request', nor a RecursionError). Streamed uploads are let through untouched:
    their view reads them in chunks. A request that routing refused (no such path or method) gets
    its 404 or 405 with its body unread: the gate let it by without credentials."""
    if request.endpoint is None or request.endpoint in guards.STREAMED_ENDPOINTS:
        return
    if request.path.startswith("/api/") and request.method in UNSAFE_METHODS and request.get_data():
        if not request.is_json:
            raise ValidationError({"body": "must be JSON (Content-Type: application/json)"})
        data = request.get_data()
        if guards.json_too_deep(data):
            raise ValidationError({"body": f"nests arrays and objects more than {guards.MAX_JSON_DEPTH} "
                                           "levels deep"})
        try:
            json.loads(data)
        except ValueError as exc:
            raise ValidationError({"body": f"is not valid JSON ({exc})"}) from None


# --- the gate --------------------------------------------------------------------------------
def _gate() -> Response | None:
    """Credentials from the headers (and the session cookie) only: the body is not read here unless
    the request is already authenticated (a console form's CSRF token)."""
    request.max_content_length = guards.body_cap(request.endpoint)
    if request.endpoint in guards.STREAMED_ENDPOINTS:
        guards.lift_deadline(request.environ)
    app_services = services()
    if not request.endpoint or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if current_app.secret_key is None:
        _load_secret_key(current_app)
        if current_app.secret_key is None:
            raise Unavailable("cannot check the session: the session key is in the cluster store")
    is_api = request.path.startswith("/api/")
    header = request.headers.get("Authorization", "")
    if is_api and header.startswith("Bearer "):
        user = app_services["auth"].user_for_token(header.removeprefix("Bearer ").strip())
        if user is None:
            raise AuthenticationError("the bearer token is invalid or has expired; log in again")
        g.user = user
        g.via = "token"
        return None
    user = session.get("user")
    if user is None:
        if is_api:
            raise AuthenticationError("authentication required: log in with POST /api/v1/auth/login "
                                      "and send 'Authorization: Bearer <token>'")
        return redirect(url_for("console.login", next=request.full_path))
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
        if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
            raise AuthenticationError("missing or wrong CSRF token")
    g.user = user
    g.via = "session"
    return None


# --- errors ----------------------------------------------------------------------------------
def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


STORE_UNREACHABLE = "cluster store unreachable"
# What a cluster node says instead: it is cut off (or too many nodes are down) and will not act alone.
CUT_OFF = ("this node cannot reach a quorum of the cluster's store: it is cut off from the other nodes, or "
           "too many of them are down. It refuses changes instead of acting alone, until they answer again")


def error_response(error: CairnError) -> Response:
    status = http_status(error)
    if isinstance(error, Unavailable):
        # Which endpoints were tried and why they failed is for the log, not for any caller.
        error = Unavailable(CUT_OFF if services()["cfg"].cluster.tls else STORE_UNREACHABLE)
    elif status >= 500 and g.get("user") is None:
        # Before the gate has let the caller in, a failure's detail is nobody's business but the log's.
        error = CairnError(f"internal error; see the cairn-web log on {services()['cfg'].node_name}")
    if _wants_json():
        response = jsonify({"error": error.to_dict()})
    else:
        response = Response(render_template("error.html", status=status, error=error), mimetype="text/html")
    response.status_code = status
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _install_error_handlers(app: APIFlask) -> None:
    @app.errorhandler(CairnError)
    def _cairn_error(error: CairnError):
        if http_status(error) >= 500:
            log.warning("%s %s failed: %s", request.method, guards.printable(request.path),
                        guards.printable(error.log_text()))
        return error_response(error)

    @app.error_processor
    def _http_error(error: HTTPError):
        # APIFlask's own errors: input validation and HTTP errors raised by abort().
        detail = error.detail or {}
        if error.status_code == 400 and isinstance(detail, dict) and detail:
            fields: dict[str, str] = {}
            for location, problems in detail.items():
                for name, messages in (problems or {}).items():
                    text = messages if isinstance(messages, str) else "; ".join(_flatten(messages))
                    fields[str(name)] = text
            return error_response(ValidationError(fields))
        body = {"error": {"code": _code_for(error.status_code), "message": error.message}}
        if not _wants_json():
            return Response(render_template("error.html", status=error.status_code,
                                            error=CairnError(error.message)),
                            status=error.status_code, mimetype="text/html")
        return body, error.status_code, error.headers

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return error
        log.exception("unhandled error on %s %s", request.method, guards.printable(request.path))
        return error_response(CairnError("internal error; see the cairn-web log on "
                                         f"{services()['cfg'].node_name}"))


def _flatten(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        return [f"{k}: {m}" for k, v in messages.items() for m in _flatten(v)]
    return [m for item in messages for m in _flatten(item)]


def _code_for(status: int) -> str:
    return {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "too_large",
            415: "unsupported_media_type"}.get(status, "error")
