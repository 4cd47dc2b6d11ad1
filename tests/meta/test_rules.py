"""Rules that keep the code base honest: one door to commands, no shell, every API route behind
authentication, every API field described."""

import ast
from pathlib import Path

import pytest

from cairn import config as config_mod
from cairn.web.app import PUBLIC_ENDPOINTS, create_app
from support import new_root

SERVICES = Path(__file__).resolve().parents[2] / "services" / "cairn"
SOURCES = sorted(SERVICES.rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_rules_see_the_code():
    assert len(SOURCES) > 20


def test_only_the_runner_imports_subprocess():
    offenders = [str(p.relative_to(SERVICES)) for p in SOURCES
                 if {"subprocess", "pty"} & imports_of(p) and p.name != "runner.py"]
    assert offenders == []


def test_no_shell_true_anywhere():
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "shell" and not (
                    isinstance(node.value, ast.Constant) and node.value.value is False):
                offenders.append(f"{path.relative_to(SERVICES)}:{node.value.lineno}")
    assert offenders == []


def test_os_system_and_popen_are_not_used():
    offenders = [str(p.relative_to(SERVICES)) for p in SOURCES
                 if any(isinstance(n, ast.Attribute) and n.attr in ("system", "popen") and
                        isinstance(n.value, ast.Name) and n.value.id == "os"
                        for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


@pytest.fixture(scope="module")
def app(etcd, tmp_path_factory):
    cfg = config_mod.Config(node_name="meta", etcd_endpoints=tuple(etcd.endpoints),
                            state_dir=tmp_path_factory.mktemp("meta"), store_root=new_root())
    return create_app(cfg)


def test_every_api_route_except_login_and_health_refuses_unauthenticated_requests(app):
    client = app.test_client()
    checked = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = rule.rule.replace("<job_id>", "x").replace("<name>", "x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            reply = client.open(path, method=method, json={} if method != "GET" else None,
                                base_url="https://localhost")
            checked.append(rule.endpoint)
            if rule.endpoint in PUBLIC_ENDPOINTS:
                assert reply.status_code != 401, rule.rule
            else:
                assert reply.status_code == 401, f"{method} {rule.rule} answered {reply.status_code}"
                assert reply.get_json()["error"]["code"] == "unauthenticated"
    assert {"api.login", "api.health", "api.list_jobs", "api.abort_job", "openapi.spec"} <= set(checked)


def test_public_endpoints_are_only_login_and_health_in_the_api():
    assert {e for e in PUBLIC_ENDPOINTS if e.startswith("api.")} == {"api.login", "api.health"}


def test_every_api_field_has_a_description(app):
    with app.app_context():
        spec = app.spec
    missing = []
    for name, schema in spec["components"]["schemas"].items():
        if name in ("ValidationError", "HTTPError"):
            continue  # APIFlask's own error schemas
        for field, body in schema.get("properties", {}).items():
            if not body.get("description"):
                missing.append(f"{name}.{field}")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and not parameter.get("description"):
                    missing.append(f"{method.upper()} {path} ?{parameter['name']}")
    assert missing == []
