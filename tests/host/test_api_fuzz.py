"""The whole of /api/v1 fuzzed against its own OpenAPI document (schemathesis, property-based), on a
real stack (etcd, cairn-agent and cairn-web processes, btrfs on loop devices, libvirtd) seeded
through the API so the deep paths are reached: a pool with volumes and a snapshot, file users and
a group, a share, an iSCSI target with a LUN, two uploaded images and a stopped VM with a snapshot.
Path parameters are mostly the seeded names (else made up: the 404 paths); body fields named pool,
volume and node are often the seeded ones, and name, size and password now and then ones the
model takes, so a request gets past "no such pool" to the checks behind it, and some get done.

What fails the test: a 5xx; a status code, content type, header or body the document does not
give for the operation; a request the schema calls invalid that is not refused; a method the path
does not have that is not answered 405. (That every route refuses a request without credentials
is tests/meta/test_rules.py's.) The totals (operations, cases, failures) are written to
build/test-artifacts/api-fuzz.txt, the fuzzer's whole output next to it, and the failures are in
the assertion message with a curl line to reproduce each.

No operation is left out. Two runs over one seed: every operation but the deletes, then the
deletes, so that a deleted share or VM does not keep the cases after it from the deep paths. Log
out gets a token of its own to revoke; the event stream is read for one event or 2 s; the VNC
WebSocket route gets plain GETs (its 400: no upgrade asked); the image upload gets bodies as its
document describes. The VM is never started (see "path.action"). Bounded by MAX_EXAMPLES cases per
operation and phase; CAIRN_FUZZ_SEED picks another seed (the default is fixed, so `make test` asks
the same questions each time).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from cairn.runner import Runner
from environment import missing
from support import ARTIFACTS, finish_job, libvirt_host, storage_stack, virsh

SCHEMATHESIS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "schemathesis"
TOTALS = ARTIFACTS / "api-fuzz.txt"
MiB = 1 << 20
PREFIX = "fz-"                  # the seeded VM's name starts with it: libvirt_host removes such domains
VM = f"{PREFIX}vm"
SEED = int(os.environ.get("CAIRN_FUZZ_SEED", "20261207"))
# Cases per operation in each of the coverage and fuzzing phases: the two runs take about a
# minute and a half on 2 shared cores.
MAX_EXAMPLES = 30
# Every check a single request can decide, but positive_data_acceptance (a request the schema
# allows may still be refused by the model's checks: the schema gives the shape, the model the
# meaning), object_level_authorization (one admin user: no one else's objects to reach) and
# ignored_auth (tests/meta/test_rules.py sends every route a request without credentials; here it
# would double the requests).
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "missing_required_header", "unsupported_method"]

pytestmark = missing(tools={"libvirtd": "Debian package libvirt-daemon-system",
                            "xorriso": "Debian package xorriso"},
                     files={SCHEMATHESIS: "tests/requirements.txt (`make venv`)"})


@dataclass(frozen=True)
class Seed:
    node: str
    pool_disk: str
    free_disk: str
    job: str


def seed(stack, loops, workdir: Path) -> Seed:
    """What the cases find, made through the API as a user would."""
    session = stack.session()
    pool_disk, free_disk = loops.ids()

    def call(method, path, **kwargs):
        reply = session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)
        assert reply.status_code < 300, f"{method} {path}: {reply.status_code} {reply.text}"
        return reply

    def job(method, path, **kwargs) -> dict:
        done = finish_job(session, stack, method, path, timeout=180, **kwargs)
        assert done["state"] == "success", f"{method} {path}: {done.get('error')}"
        return done

    pool = job("POST", "/pools", json={"name": "tank", "node": stack.node, "disks": [pool_disk],
                                       "profile": "single"})
    os.chmod(stack.cfg.storage.pools_root, 0o755)       # QEMU (libvirt-qemu) reaches the VM's disks
    job("POST", "/pools/tank/volumes", json={"name": "data", "quota_bytes": 256 * MiB,
                                             "schedule": {"every": "daily", "keep_last": 3}})
    job("POST", "/pools/tank/volumes", json={"name": "luns"})
    job("POST", "/pools/tank/volumes/data/snapshots", json={"name": "before"})
    call("POST", "/file-groups", json={"name": "crew", "description": "everyone"})
    call("POST", "/file-users", json={"name": "alice", "password": "Secret-123", "groups": ["crew"]})
    call("POST", "/file-users", json={"name": "bob", "password": "Secret-456"})
    call("POST", "/shares", json={"name": "office", "pool": "tank", "volume": "data", "smb": {},
                                  "permissions": [{"principal": "user:alice", "access": "rw"},
                                                  {"principal": "group:crew", "access": "ro"}]})
    call("POST", "/iscsi-targets", json={"name": "store", "pool": "tank", "volume": "luns",
                                         "initiators": ["iqn.1993-08.org.debian:01:abcdef"],
                                         "luns": [{"size": "64M"}],
                                         "chap": {"user": "vmhost", "password": "twelve-chars"}})
    tree = workdir / "iso-tree"
    tree.mkdir()
    (tree / "readme.txt").write_text("cairn\n")
    iso = workdir / "boot.iso"
    Runner().run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "CAIRNFZ", "-o", str(iso), str(tree)])
    octets = {"Content-Type": "application/octet-stream"}
    iso_path = call("PUT", "/images/tank/boot.iso", data=iso.read_bytes(), headers=octets).json()["path"]
    call("PUT", "/images/tank/blank.img", data=bytes(MiB), headers=octets)
    job("POST", "/vms", json={"name": VM, "pool": "tank", "vcpus": 1, "memory_mib": 64, "firmware": "bios",
                              "cpu_model": "qemu64", "disks": [{"size": "16M"}], "nics": [], "cdrom": iso_path})
    job("POST", f"/vms/{VM}/snapshots", json={"name": "first"})
    return Seed(node=stack.node, pool_disk=pool_disk, free_disk=free_disk, job=pool["id"])


def fuzzer_config(url: str, ca: str, found: Seed, token: str, spare_token: str) -> dict:
    """schemathesis.toml of a run (which operations it takes is on its command line)."""
    values = {
        # Per path parameter, the seeded names it takes 4 times in 5 (else a made-up one)...
        "path.node": [found.node],
        "path.disk_id": [found.pool_disk, found.free_disk],
        "path.pool": ["tank"],
        "path.volume": ["data", "luns"],
        "path.snapshot": ["before", "first"],
        "path.lun": ["0", "1"],
        "path.job_id": [found.job],
        # No "start": a started guest would take a core of this machine for the rest of the run.
        "path.action": ["stop", "poweroff", "reboot", "pause", "resume"],
        # ... half the time a name that a destroy confirms; often the seeded pool, volume and node,
        # and now and then a name, size and password that pass the model's checks, so that
        # creates and grows get done too.
        "query.confirm": ["tank", "data", "luns", "store", "0"],
        "body.pool": ["tank"],
        "body.volume": ["data", "luns"],
        "body.node": [found.node],
        "body.name": [f"{PREFIX}new"],
        "body.size": ["128M", "2G"],
        "body.password": ["Secret-1234"],
    }
    # A path's {name} is what its collection holds. (No md arrays: this kernel has no md, the
    # appliance tests have; /arrays/{name} answers 404.)
    names = {"pools": ["tank"], "vms": [VM], "shares": ["office"], "file-users": ["alice", "bob"],
             "file-groups": ["crew"], "iscsi-targets": ["store"], "nodes": [found.node],
             "images": ["boot.iso", "blank.img"]}
    probability = {"query.confirm": 0.5, "body.pool": 0.7, "body.volume": 0.7, "body.node": 0.7,
                   "body.name": 0.3, "body.size": 0.5, "body.password": 0.5}
    dictionaries = {key: {"values": seeded} for key, seeded in values.items()}
    dictionaries.update({f"{collection}.name": {"values": seeded} for collection, seeded in names.items()})
    by_collection = [{"include-path-regex": f"^/api/v1/{collection}/",
                      "parameters": {"path.name": {"dictionary": f"{collection}.name", "probability": 0.8}}}
                     for collection in names]
    return {
        "base-url": url,                        # the document's paths start with /api/v1
        "tls-verify": ca,
        "headers": {"Authorization": f"Bearer {token}"},
        "workers": 2,
        "request-timeout": 60,
        "seed": SEED,
        "continue-on-failure": True,
        "cache": {"enabled": False},
        "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        # The stateful phase chains operations that schemathesis links by itself (POST /shares, then
        # GET, PATCH /shares/{name} with the name it made): the cases' own objects, used deeper.
        "phases": {"stateful": {"enabled": True, "max-steps": 10}},
        "dictionaries": dictionaries,
        "parameters": {key: {"dictionary": key, "probability": probability.get(key, 0.8)} for key in values},
        "operations": [
            *by_collection,
            # Log out revokes the token it is sent with: it gets one of its own.
            {"include-path": "/api/v1/auth/logout", "headers": {"Authorization": f"Bearer {spare_token}"}},
            # The event stream goes on for minutes: read one event, or until 2 s without one.
            {"include-path": "/api/v1/events/stream", "max-stream-events": 1, "request-timeout": 2,
             "generation": {"max-examples": 3}},
        ],
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory, request):
    with libvirt_host(tmp_path_factory.mktemp("libvirtd"), PREFIX) as mounts:
        base = Path(tempfile.mkdtemp(prefix="cairn-fuzz-", dir=mounts))
        os.chmod(base, 0o755)
        try:
            with storage_stack(base, 2, 1024, keep_logs=lambda: request.session.testsfailed) as (stack, loops):
                try:
                    yield stack, seed(stack, loops, base)
                finally:
                    undefine_domains(stack)
        finally:
            shutil.rmtree(base, ignore_errors=True)


def undefine_domains(stack) -> None:
    """The libvirt domains of every VM the stack has a record of: the cases make VMs with names of
    their own (clones, restores), which libvirt_host's clean-up by prefix does not know. By UUID,
    so no other domain on this host is touched; the agent is stopped first, so no job defines one
    after."""
    stack.agent.stop()
    for entry in stack.store().list("vms/"):
        uuid = entry.value.get("uuid")
        if uuid:
            virsh("destroy", uuid, check=False)
            virsh("undefine", uuid, "--nvram", check=False)


def fuzz(url: str, config: dict, selection: list[str], reports: Path) -> dict:
    """One schemathesis run; its JSON report, with its output under "output"."""
    reports.mkdir(parents=True)
    path = reports / "schemathesis.toml"
    path.touch(mode=0o600)                  # it holds a bearer token
    report_path = reports / "report.json"
    path.write_text(tomli_w.dumps({**config, "reports": {"json": {"enabled": True, "path": str(report_path)}}}))
    result = Runner().run([str(SCHEMATHESIS), "--config-file", str(path), "run", "--no-color", *selection,
                           url + "/api/v1/openapi.json"], timeout=600, check=False, cwd=reports,
                          env={"COLUMNS": "120"})
    assert report_path.exists(), f"schemathesis made no report (exit {result.returncode}):\n" \
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return {**json.loads(report_path.read_text()), "output": result.stdout + result.stderr,
            "seconds": result.duration}


def failures_section(output: str) -> str:
    """The fuzzer's list of failures (each with a curl line that reproduces it)."""
    start = output.find("= FAILURES =")
    if start < 0:
        return ""
    ends = [output.find(f"= {title} =", start) for title in ("WARNINGS", "SUMMARY")]
    end = min([i for i in ends if i >= 0] or [len(output)])
    return output[output.rfind("\n", 0, start) + 1:output.rfind("\n", 0, end)]


def test_what_the_fuzzer_found_stays_fixed(rig):
    """Each was a 500, or an answer other than the document's, until fixed (before the fuzz: the
    seeded VM and volume are there)."""
    stack, _ = rig
    session = stack.session()

    def call(method, path, **kwargs):
        return session.request(method, stack.url + "/api/v1" + path, timeout=60, **kwargs)

    # A list among the names made a set() fail: 500.
    clone = call("POST", f"/vms/{VM}/clones", json={"names": [[], "fz-copy", "fz-copy"]})
    assert (clone.status_code, set(clone.json()["error"]["fields"])) == (400, {"names[0]", "names"})
    # false was "no name given": a snapshot named by the clock.
    snapshot = call("POST", f"/vms/{VM}/snapshots", json={"name": False})
    assert (snapshot.status_code, list(snapshot.json()["error"]["fields"])) == (400, ["name"])
    # 2.5 was taken as 2, and "yes" as true.
    fraction = call("PATCH", "/pools/tank/volumes/data", json={"schedule": {"keep_weekly": 2.5}})
    assert (fraction.status_code, list(fraction.json()["error"]["fields"])) == (400, ["schedule"])
    word = call("POST", "/pools/tank/disks", json={"disks": ["nope"], "balance": "yes"})
    assert (word.status_code, list(word.json()["error"]["fields"])) == (400, ["balance"])
    # A method the path does not have, with a body that is not JSON: the body was read and
    # refused (400) before the 405, even without credentials.
    for headers in ({}, {"Authorization": session.headers["Authorization"]}):
        unrouted = stack.session(login=False).post(stack.url + "/api/v1/images/tank/blank.img", data=b"\x89PNG",
                                                   headers={**headers, "Content-Type": "application/octet-stream"})
        assert unrouted.status_code == 405, unrouted.text


class TotalsAtTheEnd:
    """A plugin that prints the totals in pytest's closing summary, whatever -s and -q say."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line(self.line)


def test_every_answer_is_one_the_document_gives_and_none_is_a_server_error(rig, tmp_path, request):
    stack, found = rig
    # Both tokens before the cases' wrong logins set off the login rate limit for this address.
    token, spare = (stack.session().headers["Authorization"].removeprefix("Bearer ") for _ in range(2))
    config = fuzzer_config(stack.url, stack.ca, found, token, spare)
    runs = {name: fuzz(stack.url, config, selection, tmp_path / name)
            for name, selection in (("main", ["--exclude-method", "DELETE"]),
                                    ("deletes", ["--include-method", "DELETE"]))}

    operations = sum(run["operations"]["tested"] for run in runs.values())
    cases = sum(run["test_cases"]["generated"] for run in runs.values())
    failing = sum(run["test_cases"]["with_failures"] for run in runs.values())
    errors = [f"{name}: {error['title']} ×{error['count']}" for name, run in runs.items() for error in run["errors"]]
    kinds = [f"{failure['title']} ×{failure['count']} ({', '.join(failure['operations'])})"
             for run in runs.values() for failure in run["failures"]]
    totals = (f"API fuzz (schemathesis, seed {SEED}, {MAX_EXAMPLES} cases per operation and phase): "
              f"{operations} operations, {cases} cases, {failing} failing, {len(errors)} errors, "
              f"in {sum(run['seconds'] for run in runs.values()):.0f} s")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    TOTALS.write_text(totals + "\n" + "".join(f"  {line}\n" for line in kinds + errors))
    for name, run in runs.items():
        (ARTIFACTS / f"api-fuzz-{name}.log").write_text(run["output"])
    request.config.pluginmanager.register(TotalsAtTheEnd(totals), "api-fuzz-totals")

    # The cases ran with the admin's token all along (a revoked one would have made every answer a
    # documented 401), over the whole document.
    assert stack.session(login=False).get(stack.url + "/api/v1/nodes",
                                          headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert [run["operations"]["tested"] for run in runs.values()] == \
        [run["operations"]["selected"] for run in runs.values()]
    assert operations == runs["main"]["operations"]["total"]
    detail = "\n".join(failures_section(run["output"]) for run in runs.values())[:30000]
    assert (failing, errors) == (0, []), f"{totals}\n{detail}"
