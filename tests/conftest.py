"""Shared fixtures: a real etcd (Debian's etcd-server) on loopback, stores isolated by key root,
and real cairn-agent + cairn-web processes. Helpers live in support.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cairn.cluster.store import Store  # noqa: E402
from cairn.devstack import EtcdCluster  # noqa: E402
from support import ARTIFACTS, Stack, new_root, start_stack  # noqa: E402

# environment: a skip for a missing tool fails under CI / `make test` (environment.py says why);
# timing: time by suite and module, printed at the end and kept for `make test`'s phase report.
pytest_plugins = ["environment", "timing"]


# What a test's agent must never change on this machine (stacks keep accounts and Samba's
# config in a sandbox: cairn.devstack.share_sandbox).
HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/samba/smb.conf", "/etc/exports.d/cairn.exports")


def _contents(paths) -> dict[str, bytes | None]:
    return {p: Path(p).read_bytes() if Path(p).exists() else None for p in paths}


@pytest.fixture(scope="session", autouse=True)
def host_files_untouched():
    before = _contents(HOST_FILES)
    yield
    changed = [p for p, data in _contents(HOST_FILES).items() if data != before[p]]
    assert changed == [], f"tests changed this machine's {', '.join(changed)}"


@pytest.fixture(scope="session")
def etcd(tmp_path_factory) -> EtcdCluster:
    cluster = EtcdCluster.create(tmp_path_factory.mktemp("etcd"), 1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def store(etcd) -> Store:
    return Store(etcd.endpoints, new_root())


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request) -> Stack:
    base = tmp_path_factory.mktemp("stack")
    running = start_stack(base)
    yield running
    running.stop()
    if request.session.testsfailed:
        keep = ARTIFACTS / "logs" / base.name
        keep.mkdir(parents=True, exist_ok=True)
        for log in base.glob("*.log"):
            shutil.copy(log, keep / log.name)
