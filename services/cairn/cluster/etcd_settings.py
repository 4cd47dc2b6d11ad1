"""How every etcd member of Cairn runs: the settings that keep the store small and usable for years.

One table, used by the appliance image (rootfs/usr/lib/systemd/system/etcd.service.d/cairn.conf
holds the same values as ETCD_* environment lines; a test keeps the two equal) and by the dev and
test stacks (cairn.devstack passes them as flags).

    auto-compaction   etcd keeps every revision of every key until it is compacted. Periodic
                      compaction keeps one hour of history (enough for any watcher to catch up
                      after a reconnect) and drops the rest; etcd runs it every retention/10.
    quota             the backend's size limit. Reaching it raises etcd's NOSPACE alarm and the
                      whole cluster refuses writes, so Cairn shows a warning well before
                      (QUOTA_WARN_FRACTION) and defragments members whose file is mostly free pages.
    max-txn-ops       operations per transaction (etcd's default is 128). Imports of a whole
                      shares configuration are one transaction (all or nothing), and a small
                      company's 500 users, 100 groups and 200 shares are ~1,400 writes (each user and group
                      also claims its id).
    max-request-bytes the largest request (etcd's default 1.5 MiB); such an import is ~0.5 MiB.
"""

from __future__ import annotations

QUOTA_BYTES = 2 * 1024 ** 3
QUOTA_WARN_FRACTION = 0.8
MAX_TXN_OPS = 4096
MAX_REQUEST_BYTES = 8 * 1024 ** 2

# Defragment a member when at least this much of its file is free pages, and at least half of it.
DEFRAG_MIN_FREE_BYTES = 64 * 1024 ** 2

SETTINGS: dict[str, str] = {
    "auto-compaction-mode": "periodic",
    "auto-compaction-retention": "1h",
    "quota-backend-bytes": str(QUOTA_BYTES),
    "max-txn-ops": str(MAX_TXN_OPS),
    "max-request-bytes": str(MAX_REQUEST_BYTES),
}


def tls_settings(ca: str, cert: str, key: str) -> dict[str, str]:
    """A cluster member's mutual TLS: clients and peers need a certificate from the cluster CA, and
    the member shows its own node certificate to both."""
    return {"client-cert-auth": "true", "trusted-ca-file": ca, "cert-file": cert, "key-file": key,
            "peer-client-cert-auth": "true", "peer-trusted-ca-file": ca, "peer-cert-file": cert,
            "peer-key-file": key}


def flags(settings: dict[str, str] = SETTINGS) -> list[str]:
    """Settings as etcd command-line flags, --name=value (boolean flags take no separate value) (pure)."""
    return [f"--{name}={value}" for name, value in settings.items()]


def environment(settings: dict[str, str] = SETTINGS) -> dict[str, str]:
    """Settings as etcd's environment variables (ETCD_AUTO_COMPACTION_MODE=...) (pure)."""
    return {"ETCD_" + name.upper().replace("-", "_"): value for name, value in settings.items()}


def needs_defragment(db_size: int, db_size_in_use: int) -> bool:
    """Whether a member's file is worth defragmenting: mostly free pages, and many of them (pure)."""
    free = db_size - db_size_in_use
    return free >= DEFRAG_MIN_FREE_BYTES and free * 2 >= db_size


def quota_warning(db_size: int, quota: int = QUOTA_BYTES) -> str | None:
    """A sentence for the console when a member's database nears the quota, else None (pure)."""
    if db_size < quota * QUOTA_WARN_FRACTION:
        return None
    return (f"the cluster store's database is {db_size / 1024 ** 2:.0f} MiB of its "
            f"{quota / 1024 ** 2:.0f} MiB quota ({100 * db_size / quota:.0f} %): at the quota it "
            "refuses every change. Delete old jobs, events or snapshots' records, or raise the quota.")


CLIENT_PORT = 2379
PEER_PORT = 2380


def member_environment(name: str, cluster_ip: str, ca: str, cert: str, key: str,
                       initial_cluster: dict[str, str] | None = None) -> str:
    """/etc/cairn/etcd.env of a cluster member (pure; the file overrides the image's loopback-only
    drop-in). Clients (this node's services too) and peers reach it on the cluster address only,
    over mutual TLS with certificates from the cluster CA only. `initial_cluster` (name → peer
    URL, the member itself included) is given when the member joins a running cluster; without it
    the member already has its data (it created the cluster, or it restarts)."""
    host = f"[{cluster_ip}]" if ":" in cluster_ip else cluster_ip
    settings = {
        "name": name,
        "listen-client-urls": f"https://{host}:{CLIENT_PORT}",
        "advertise-client-urls": f"https://{host}:{CLIENT_PORT}",
        "listen-peer-urls": f"https://{host}:{PEER_PORT}",
        "initial-advertise-peer-urls": f"https://{host}:{PEER_PORT}",
        **tls_settings(ca, cert, key),
    }
    if initial_cluster:
        settings["initial-cluster"] = ",".join(f"{n}={url}" for n, url in sorted(initial_cluster.items()))
        settings["initial-cluster-state"] = "existing"
    lines = environment(settings)
    for key_name, value in lines.items():
        if not value or any(c in value for c in "\n\r\"'\\ $`"):
            raise ValueError(f"{key_name}: {value!r} cannot go into an environment file")
    return "".join(f"{key_name}={value}\n" for key_name, value in lines.items())
