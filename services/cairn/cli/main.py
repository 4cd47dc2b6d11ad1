"""cairnctl: the command line over /api/v1.

    cairnctl [--url URL] [--ca FILE | --insecure] [--json] login [--user admin] [--password-stdin]
    cairnctl node list
    cairnctl node diagnose NODE [--samples N] [--wait]
    cairnctl job list [--state S] [--node N]
    cairnctl job show ID
    cairnctl job abort ID
    cairnctl disk|raid|pool|volume|snapshot ...   (storage: see cairn/cli/storage.py)
    cairnctl user|group|share ...                  (shares: see cairn/cli/shares.py)
    cairnctl iscsi ...                             (iSCSI targets: see cairn/cli/iscsi.py)
    cairnctl vm ...                                (virtual machines: see cairn/cli/vms.py)
    cairnctl image ...                             (uploaded ISO and disk images: see cairn/cli/images.py)

The login is kept in ~/.config/cairn/cli.json (mode 0600): URL, CA file and bearer token.
Exit codes: 0 ok, 1 the API refused (message printed), 2 bad usage, 3 cannot reach the server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import requests

from cairn.cli import images, iscsi, shares, storage, vms
from cairn.cli.output import ApiError, render_job, show, table

DEFAULT_URL = "https://127.0.0.1:8443"


def state_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cairn" / "cli.json"


def load_state() -> dict[str, Any]:
    path = state_path()
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(data: dict[str, Any]) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


class Client:
    def __init__(self, url: str, verify: str | bool, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.verify = verify   # passed on each request: a session-wide value loses to $REQUESTS_CA_BUNDLE
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> Any:
        return self.send(method, path, params=params, json=body)

    def send(self, method: str, path: str, params: dict | None = None, timeout: float = 30, **kwargs) -> Any:
        """One request (kwargs as requests takes them: json=, or data= and headers= for an upload);
        the reply's JSON, or ApiError with the API's message."""
        try:
            reply = self.session.request(method, f"{self.url}/api/v1{path}", params=params, timeout=timeout,
                                         verify=self.verify, **kwargs)
        except requests.exceptions.SSLError as exc:
            if "certificate" not in str(exc).lower():    # the connection broke, e.g. during an upload
                raise ConnectionError(f"the connection to {self.url} broke off ({exc.__class__.__name__})") from None
            raise ConnectionError(f"TLS check of {self.url} failed ({exc.__class__.__name__}); "
                                  "pass --ca <ca.pem> of the cluster, or --insecure") from None
        except requests.RequestException as exc:
            raise ConnectionError(f"cannot reach {self.url}: {exc.__class__.__name__}") from None
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
                message = error["message"]
            except (ValueError, KeyError, TypeError):
                message = reply.text[:200] or reply.reason
            raise ApiError(reply.status_code, message)
        return reply.json()


JOB_COLUMNS = [("ID", "id"), ("NODE", "node"), ("STATE", "state"), ("PROGRESS", "progress"),
               ("TITLE", "title"), ("CREATED", "created_at")]
NODE_COLUMNS = [("NAME", "name"), ("ONLINE", "online"), ("CPUS", "cpus"), ("KERNEL", "kernel"),
                ("UPTIME_S", "uptime")]


# --- commands --------------------------------------------------------------------------------
def cmd_login(args, state: dict[str, Any]) -> int:
    url = args.url or state.get("url") or DEFAULT_URL
    verify = _verify(args, state)
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"Password for {args.user}: ")
    reply = Client(url, verify, None).call("POST", "/auth/login", {"username": args.user, "password": password})
    save_state({"url": url, "verify": verify, "token": reply["token"], "user": reply["user"]})
    print(f"logged in to {url} as {reply['user']}")
    return 0


def cmd_node_list(client: Client, args) -> int:
    show(client.call("GET", "/nodes")["nodes"], args.json, lambda rows: table(rows, NODE_COLUMNS))
    return 0


MEMBER_COLUMNS = [("NAME", "name"), ("ROLE", "role"), ("LEADER", "leader"), ("REACHABLE", "reachable"),
                  ("RTT_MS", "rtt_ms"), ("DB_BYTES", "db_size"), ("PEER", "peer_urls")]


def cmd_cluster_status(client: Client, args) -> int:
    status = client.call("GET", "/cluster")

    def render(data: dict[str, Any]) -> str:
        rows = [dict(m, peer_urls=",".join(m["peer_urls"])) for m in data["members"]]
        quorum = data["quorum"]
        cluster = data.get("cluster")
        heading = (f"cluster {cluster['name']} ({len(cluster['nodes'])} node{'s' if len(cluster['nodes']) != 1 else ''}), "
                   f"CA {cluster['ca_fingerprint']}" if cluster else "standalone node (not in a cluster)")
        return "\n".join([heading, table(rows, MEMBER_COLUMNS), "",
                          f"quorum: {quorum['voters_up']} of {quorum['voters']} voters answer, "
                          f"{quorum['quorum']} needed; {quorum['text']}", f"roles: {data['roles']}"])
    show(status, args.json, render)
    return 0 if status["quorum"]["has_quorum"] else 1


def cmd_cluster_create(client: Client, args) -> int:
    job = client.call("POST", "/cluster", {"name": args.name, "address": args.address, "interface": args.interface})
    show(job, args.json, lambda j: (
        f"job {j['id']}: {j['title']} ({j['state']})\n"
        "When it ends, the console presents a certificate from the new cluster CA. Fetch the CA, then "
        "check that the job's result shows the same fingerprint:\n"
        "  cairnctl --insecure cluster ca --pem > cluster-ca.pem\n"
        f"  cairnctl --ca cluster-ca.pem job show {j['id']}"))
    return 0


def cmd_cluster_join(client: Client, args) -> int:
    token = sys.stdin.readline().strip() if args.token == "-" else args.token
    job = client.call("POST", "/cluster/join", {"token": token, "address": args.address, "interface": args.interface})
    show(job, args.json, lambda j: (
        f"job {j['id']}: {j['title']} ({j['state']})\n"
        "When it ends, this node's console presents a certificate from the cluster CA and its users "
        "are the cluster's: log in again with the cluster's admin account (cairnctl cluster ca --pem "
        "fetches the CA)."))
    return 0


def cmd_cluster_leave(client: Client, args) -> int:
    job = client.call("POST", "/cluster/leave")
    show(job, args.json, lambda j: (
        f"job {j['id']}: {j['title']} ({j['state']})\n"
        "When it ends, this node is standalone with its own records, and its console presents a "
        "certificate from a new CA of its own (cairnctl --insecure ... fetches it again)."))
    return 0


def cmd_cluster_remove(client: Client, args) -> int:
    job = client.call("DELETE", f"/cluster/nodes/{args.node}")
    show(job, args.json, lambda j: f"job {j['id']}: {j['title']} ({j['state']})")
    return 0


def cmd_cluster_ca(client: Client, args) -> int:
    ca = client.call("GET", "/cluster/ca")
    if args.pem:
        print(ca["ca"], end="")
        return 0
    show(ca, args.json, lambda c: f"cluster CA {c['fingerprint']}\n{c['ca']}")
    return 0


TOKEN_COLUMNS = [("ID", "id"), ("CREATED_BY", "created_by"), ("EXPIRES_AT", "expires"), ("USED_BY", "used_by")]


def cmd_cluster_token(client: Client, args) -> int:
    token = client.call("POST", "/cluster/tokens", {"ttl": args.ttl})
    show(token, args.json, lambda t: (
        f"{t['token']}\n\nPaste it on the appliance that should join (console: Cluster → Join, or "
        f"cairnctl cluster join). It works once, until {time.strftime('%Y-%m-%d %H:%M', time.localtime(t['expires_at']))}; "
        f"revoke it with: cairnctl cluster revoke {t['id']}"))
    return 0


def cmd_cluster_tokens(client: Client, args) -> int:
    kept = client.call("GET", "/cluster/tokens")["tokens"]
    rows = [dict(t, expires=time.strftime("%Y-%m-%d %H:%M", time.localtime(t["expires_at"])),
                 used_by=t["used_by"] or "-") for t in kept]
    show(kept, args.json, lambda _: table(rows, TOKEN_COLUMNS))
    return 0


def cmd_cluster_revoke(client: Client, args) -> int:
    show(client.call("DELETE", f"/cluster/tokens/{args.id}"), args.json, lambda r: r["message"])
    return 0


def cmd_node_diagnose(client: Client, args) -> int:
    job = client.call("POST", f"/nodes/{args.node}/diagnostics", {"samples": args.samples})
    if args.wait:
        while job["state"] in ("queued", "running"):
            time.sleep(0.5)
            job = client.call("GET", f"/jobs/{job['id']}")
    show(job, args.json, render_job)
    return 0 if job["state"] in ("queued", "running", "success") else 1


def cmd_job_list(client: Client, args) -> int:
    """A page of jobs (newest first); --all follows the continue tokens to the oldest."""
    params = {k: v for k, v in (("state", args.state), ("node", args.node), ("limit", args.limit),
                                ("continue", args.after)) if v}
    jobs: list[dict] = []
    while True:
        page = client.call("GET", "/jobs", params=params)
        jobs += page["jobs"]
        if not (args.all and page.get("next")):
            break
        params["continue"] = page["next"]
    show(jobs, args.json, lambda rows: table(rows, JOB_COLUMNS))
    if page.get("next") and not args.all and not args.json:
        print(f"(more: cairnctl job list --after {page['next']}, or --all)", file=sys.stderr)
    return 0


def cmd_job_show(client: Client, args) -> int:
    show(client.call("GET", f"/jobs/{args.id}"), args.json, render_job)
    return 0


def cmd_job_abort(client: Client, args) -> int:
    job = client.call("POST", f"/jobs/{args.id}/abort")
    show(job, args.json, lambda j: f"abort requested for {j['id']} ({j['state']})")
    return 0


def _verify(args, state: dict[str, Any]) -> str | bool:
    if args.insecure:
        return False
    if args.ca:
        return str(Path(args.ca).resolve())
    return state.get("verify", True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cairnctl", description="Manage a Cairn cluster")
    parser.add_argument("--url", help=f"console URL (default: the one you logged in to, else {DEFAULT_URL})")
    parser.add_argument("--ca", help="CA certificate of the cluster (ca.pem)")
    parser.add_argument("--insecure", action="store_true", help="do not check the server certificate")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="area", required=True)

    login = sub.add_parser("login", help="log in and keep a token")
    login.add_argument("--user", default="admin")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    node = sub.add_parser("node", help="nodes").add_subparsers(dest="action", required=True)
    node.add_parser("list", help="list nodes").set_defaults(func=cmd_node_list)
    diagnose = node.add_parser("diagnose", help="run the diagnostics job on a node")
    diagnose.add_argument("node")
    diagnose.add_argument("--samples", type=int, default=20)
    diagnose.add_argument("--wait", action="store_true", help="wait until the job ends")
    diagnose.set_defaults(func=cmd_node_diagnose)

    cluster = sub.add_parser("cluster", help="the cluster").add_subparsers(dest="action", required=True)
    cluster.add_parser("status", help="members of the cluster store, quorum, what losing a node would do") \
        .set_defaults(func=cmd_cluster_status)
    create = cluster.add_parser("create", help="make this node (the one you are logged in to) a cluster's first node")
    create.add_argument("name", help="the cluster's name")
    create.add_argument("--address", required=True, help="this node's cluster address with its prefix, e.g. 10.77.1.11/24")
    create.add_argument("--interface", default="", help="the NIC for cluster traffic, e.g. enp0s9")
    create.set_defaults(func=cmd_cluster_create)
    join = cluster.add_parser("join", help="join this node (the one you are logged in to) to a cluster")
    join.add_argument("token", help="the join token from a cluster node's console (- reads it from standard input)")
    join.add_argument("--address", required=True, help="this node's cluster address with its prefix, e.g. 10.77.1.12/24")
    join.add_argument("--interface", default="", help="this node's NIC for cluster traffic, e.g. enp0s9")
    join.set_defaults(func=cmd_cluster_join)
    cluster.add_parser("leave", help="take this node (the one you are logged in to) out of its cluster, with "
                       "its pools, VMs and shares").set_defaults(func=cmd_cluster_leave)
    remove = cluster.add_parser("remove", help="remove a node that is gone for good (its records are kept)")
    remove.add_argument("node", help="the node's name or id")
    remove.set_defaults(func=cmd_cluster_remove)
    ca = cluster.add_parser("ca", help="the cluster CA certificate and its fingerprint")
    ca.add_argument("--pem", action="store_true", help="print only the certificate (PEM)")
    ca.set_defaults(func=cmd_cluster_ca)
    token = cluster.add_parser("token", help="make a one-time join token for another appliance")
    token.add_argument("--ttl", type=int, default=3600, help="seconds it stays valid (60 to 604800)")
    token.set_defaults(func=cmd_cluster_token)
    cluster.add_parser("tokens", help="join tokens not yet expired").set_defaults(func=cmd_cluster_tokens)
    revoke = cluster.add_parser("revoke", help="revoke a join token")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_cluster_revoke)

    storage.add_parsers(sub)
    shares.add_parsers(sub)
    iscsi.add_parsers(sub)
    vms.add_parsers(sub)
    images.add_parsers(sub)

    job = sub.add_parser("job", help="jobs").add_subparsers(dest="action", required=True)
    job_list = job.add_parser("list", help="list jobs, newest first")
    job_list.add_argument("--state")
    job_list.add_argument("--node")
    job_list.add_argument("--limit", type=int, help="jobs per page (default 100)")
    job_list.add_argument("--after", metavar="TOKEN", help="the next page (the token a listing printed)")
    job_list.add_argument("--all", action="store_true", help="every page, down to the oldest job kept")
    job_list.set_defaults(func=cmd_job_list)
    for name, func, text in (("show", cmd_job_show, "show one job with its log"),
                             ("abort", cmd_job_abort, "ask a job to stop")):
        command = job.add_parser(name, help=text)
        command.add_argument("id")
        command.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state = load_state()
    try:
        if args.area == "login":
            return cmd_login(args, state)
        if not state.get("token"):
            print("not logged in: run 'cairnctl login' first", file=sys.stderr)
            return 2
        client = Client(args.url or state["url"], _verify(args, state), state["token"])
        return args.func(client, args)
    except ApiError as exc:
        print(f"error ({exc.status}): {exc.message}", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:            # a value the command line itself could not read (a size, ...)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
