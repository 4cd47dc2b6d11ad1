"""cairnctl storage commands: disks, pools, volumes, snapshots.

    cairnctl disk list [--node N] [--free]
    cairnctl disk show NODE DISK
    cairnctl disk rescan NODE [--wait]
    cairnctl disk selftest NODE DISK [--type short|long] [--wait]
    cairnctl pool list | show NAME
    cairnctl pool create NAME --node N --disk ID [--disk ID ...] [--profile raid1] [--compression zstd] [--wait]
    cairnctl pool add-disk NAME ID [ID ...] [--no-balance] [--wait]
    cairnctl pool replace NAME OLD NEW [--wait]
    cairnctl pool scrub|balance NAME [--wait]
    cairnctl pool set NAME [--scrub-schedule weekly|monthly|none] [--balance-schedule ...]
    cairnctl pool destroy NAME --confirm NAME [--wait]
    cairnctl pool create NAME --node N --array ARRAY [--wait]          (a pool on an md array)
    cairnctl raid list | show NAME
    cairnctl raid create NAME --node N --level raid1|raid5|raid6|raid10|raid0 --disk ID ... [--wait]
    cairnctl raid fail NAME DISK | grow NAME DISK | replace NAME OLD NEW [--wait]
    cairnctl raid delete NAME --confirm NAME [--wait]
    cairnctl volume list POOL | show POOL NAME
    cairnctl volume create POOL NAME [--quota 10G] [--every daily --keep-last 7 ...] [--wait]
    cairnctl volume set POOL NAME [--quota 20G | --no-quota] [--every ... | --no-schedule]
    cairnctl volume delete POOL NAME --confirm NAME [--wait]
    cairnctl snapshot list POOL VOLUME
    cairnctl snapshot create POOL VOLUME [--name N] [--wait]
    cairnctl snapshot delete POOL VOLUME SNAPSHOT [--wait]
    cairnctl snapshot rollback POOL VOLUME SNAPSHOT --confirm VOLUME [--wait]
    cairnctl snapshot clone POOL VOLUME SNAPSHOT NEW_VOLUME [--wait]

Commands that start a job print it; with --wait they follow it to the end and exit 1 if it failed.
"""

from __future__ import annotations

import time
from typing import Any

from cairn.cli.output import render_job, show, table
from cairn.storage.model import parse_size



def human(size: Any) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def follow(client, job: dict[str, Any], wait: bool) -> dict[str, Any]:
    while wait and job["state"] in ("queued", "running"):
        time.sleep(0.5)
        job = client.call("GET", f"/jobs/{job['id']}")
    return job


def finish(client, args, job: dict[str, Any]) -> int:
    job = follow(client, job, getattr(args, "wait", False))
    show(job, args.json, render_job)
    return 0 if job["state"] in ("queued", "running", "success") else 1


# --- rendering (pure) -------------------------------------------------------------------------
def disk_rows(disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"node": d["node"], "id": d.get("id"), "path": d.get("path"), "size": human(d.get("size")),
             "bus": d.get("bus"), "media": d.get("media"), "model": d.get("model"),
             "usage": d.get("usage", {}).get("kind"), "health": (d.get("health") or {}).get("verdict"),
             "temp": ((d.get("health") or {}).get("report") or {}).get("temperature_c")} for d in disks]


DISK_COLUMNS = [("NODE", "node"), ("ID", "id"), ("PATH", "path"), ("SIZE", "size"), ("BUS", "bus"),
                ("MEDIA", "media"), ("USAGE", "usage"), ("HEALTH", "health"), ("TEMP_C", "temp"), ("MODEL", "model")]


def pool_rows(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for pool in pools:
        status = pool.get("status") or {}
        usage = status.get("usage") or {}
        rows.append({"name": pool["name"], "node": pool["node"], "profile": pool["data_profile"],
                     "disks": len(pool.get("disks", [])), "health": status.get("health", pool["state"]),
                     "size": human(usage.get("device_size")), "free": human(usage.get("free_estimated"))})
    return rows


POOL_COLUMNS = [("NAME", "name"), ("NODE", "node"), ("PROFILE", "profile"), ("DISKS", "disks"),
                ("HEALTH", "health"), ("SIZE", "size"), ("FREE", "free")]


def render_pool(pool: dict[str, Any]) -> str:
    status = pool.get("status") or {}
    usage = status.get("usage") or {}
    lines = [f"pool {pool['name']} on {pool['node']}: {status.get('health', pool['state'])}",
             f"  profile: data {pool['data_profile']}, metadata {pool['metadata_profile']}; "
             f"compression {pool['compression']}; path {status.get('path', '-')}",
             f"  size {human(usage.get('device_size'))}, used {human(usage.get('used'))}, "
             f"free about {human(usage.get('free_estimated'))}; "
             f"data {human(usage.get('data_used'))} of {human(usage.get('data_size'))}, "
             f"metadata {human(usage.get('metadata_used'))} of {human(usage.get('metadata_size'))}"]
    scrub = status.get("scrub") or {}
    if scrub:
        lines.append(f"  scrub: {scrub.get('state')}, {human(scrub.get('bytes_scrubbed'))} checked, "
                     f"{scrub.get('corrected_errors', 0)} corrected, {scrub.get('uncorrectable_errors', 0)} uncorrectable")
    devices = [{"devid": d.get("devid"), "disk": d.get("disk"), "path": d.get("path"), "size": human(d.get("size")),
                "allocated": human(d.get("allocated")), "missing": d.get("missing"), "errors": d.get("errors")}
               for d in status.get("devices", [])]
    if devices:
        lines.append(table(devices, [("  DEVID", "devid"), ("DISK", "disk"), ("PATH", "path"), ("SIZE", "size"),
                                     ("ALLOCATED", "allocated"), ("MISSING", "missing"), ("ERRORS", "errors")]))
    return "\n".join(lines)


def volume_rows(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": v["name"], "quota": human(v.get("quota_bytes")) if v.get("quota_bytes") else "-",
             "referenced": human(v.get("referenced")), "exclusive": human(v.get("exclusive")),
             "snapshots": len(v.get("snapshots", [])),
             "schedule": (v.get("schedule") or {}).get("every", "-"), "path": v.get("path")} for v in volumes]


VOLUME_COLUMNS = [("NAME", "name"), ("QUOTA", "quota"), ("REFERENCED", "referenced"), ("EXCLUSIVE", "exclusive"),
                  ("SNAPSHOTS", "snapshots"), ("SCHEDULE", "schedule"), ("PATH", "path")]


def snapshot_rows(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": s["name"], "created": s.get("created_at"), "auto": s.get("auto"),
             "referenced": human(s.get("referenced")), "exclusive": human(s.get("exclusive"))} for s in snapshots]


SNAPSHOT_COLUMNS = [("NAME", "name"), ("CREATED", "created"), ("AUTO", "auto"), ("REFERENCED", "referenced"),
                    ("EXCLUSIVE", "exclusive")]


# --- commands ---------------------------------------------------------------------------------
def cmd_disk_list(client, args) -> int:
    params = {k: v for k, v in (("node", args.node), ("usage", "free" if args.free else None)) if v}
    show(client.call("GET", "/disks", params=params)["disks"], args.json,
         lambda rows: table(disk_rows(rows), DISK_COLUMNS))
    return 0


def cmd_disk_show(client, args) -> int:

    def render(disk):
        health = disk.get("health") or {}
        report = health.get("report") or {}
        lines = [f"{disk['id']} on {disk['node']}: {disk['path']}, {human(disk['size'])}, {disk['bus']} {disk['media']}, "
                 f"{disk.get('model') or '-'}",
                 f"  usage: {disk['usage']['kind']} ({disk['usage']['detail']})",
                 f"  health: {health.get('verdict', 'not read yet')}"
                 + (": " + "; ".join(health["reasons"]) if health.get("reasons") else "")]
        for label, key in (("temperature °C", "temperature_c"), ("power-on hours", "power_on_hours"),
                           ("reallocated sectors", "reallocated_sectors"), ("pending sectors", "pending_sectors"),
                           ("media errors", "media_errors"), ("wear %", "percentage_used")):
            if report.get(key) is not None:
                lines.append(f"  {label}: {report[key]}")
        test = report.get("selftest") or {}
        if test.get("last_result"):
            lines.append(f"  last self-test: {test.get('last_type')}: {test['last_result']}")
        return "\n".join(lines)

    show(client.call("GET", f"/nodes/{args.node}/disks/{args.disk}"), args.json, render)
    return 0


def cmd_disk_rescan(client, args) -> int:
    return finish(client, args, client.call("POST", f"/nodes/{args.node}/disks/rescan"))


def cmd_disk_selftest(client, args) -> int:
    return finish(client, args, client.call("POST", f"/nodes/{args.node}/disks/{args.disk}/selftest",
                                            {"type": args.type}))


def cmd_pool_list(client, args) -> int:
    show(client.call("GET", "/pools")["pools"], args.json, lambda rows: table(pool_rows(rows), POOL_COLUMNS))
    return 0


def cmd_pool_show(client, args) -> int:
    show(client.call("GET", f"/pools/{args.name}"), args.json, render_pool)
    return 0


def cmd_pool_create(client, args) -> int:
    body = {"name": args.name, "node": args.node, "disks": args.disk, "profile": args.profile,
            "compression": args.compression, "array": args.array}
    if args.metadata_profile:
        body["metadata_profile"] = args.metadata_profile
    return finish(client, args, client.call("POST", "/pools", body))


def cmd_pool_add(client, args) -> int:
    return finish(client, args, client.call("POST", f"/pools/{args.name}/disks",
                                            {"disks": args.disks, "balance": not args.no_balance}))


def cmd_pool_replace(client, args) -> int:
    return finish(client, args, client.call("POST", f"/pools/{args.name}/replace", {"old": args.old, "new": args.new}))


def cmd_pool_action(client, args) -> int:
    return finish(client, args, client.call("POST", f"/pools/{args.name}/{args.action}"))


def cmd_pool_set(client, args) -> int:
    body = {f"{kind}_schedule": None if value == "none" else value
            for kind, value in (("scrub", args.scrub_schedule), ("balance", args.balance_schedule)) if value}
    if not body:
        print("nothing to change: give --scrub-schedule and/or --balance-schedule")
        return 2
    show(client.call("PATCH", f"/pools/{args.name}", body), args.json, render_pool)
    return 0


def cmd_pool_destroy(client, args) -> int:
    return finish(client, args, client.call("DELETE", f"/pools/{args.name}", params={"confirm": args.confirm}))


def array_rows(arrays: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for array in arrays:
        status = array.get("status") or {}
        rows.append({"name": array["name"], "node": array["node"], "level": array["level"],
                     "disks": len(array.get("disks", [])), "health": status.get("health", "-"),
                     "progress": f"{status['sync_percent']:.1f} %" if status.get("sync_percent") is not None else "-",
                     "size": human(status.get("size"))})
    return rows


ARRAY_COLUMNS = [("NAME", "name"), ("NODE", "node"), ("LEVEL", "level"), ("DISKS", "disks"),
                 ("HEALTH", "health"), ("SYNC", "progress"), ("SIZE", "size")]


def render_array(array: dict[str, Any]) -> str:
    status = array.get("status") or {}
    lines = [f"array {array['name']} ({array['level']}) on {array['node']}: {status.get('health', '-')} "
             f"[{status.get('state', '-')}]" + (f", {status.get('sync_action')} {status.get('sync_percent')} %"
                                                 if status.get("sync_action") else ""),
             f"  disks: {', '.join(array.get('disks', []))}"]
    for member in status.get("members", []):
        lines.append(f"  {member.get('role') if member.get('role') is not None else '-':>3}  "
                     f"{member.get('path') or 'removed'}  {member.get('state')}")
    return "\n".join(lines)


def cmd_raid_list(client, args) -> int:
    show(client.call("GET", "/arrays")["arrays"], args.json, lambda rows: table(array_rows(rows), ARRAY_COLUMNS))
    return 0


def cmd_raid_show(client, args) -> int:
    show(client.call("GET", f"/arrays/{args.name}"), args.json, render_array)
    return 0


def cmd_raid_create(client, args) -> int:
    return finish(client, args, client.call("POST", "/arrays", {"name": args.name, "node": args.node,
                                                                "level": args.level, "disks": args.disk}))


def cmd_raid_member(client, args) -> int:
    return finish(client, args, client.call("POST", f"/arrays/{args.name}/{args.action}", {"disk": args.disk}))


def cmd_raid_replace(client, args) -> int:
    return finish(client, args, client.call("POST", f"/arrays/{args.name}/replace", {"old": args.old, "new": args.new}))


def cmd_raid_delete(client, args) -> int:
    return finish(client, args, client.call("DELETE", f"/arrays/{args.name}", params={"confirm": args.confirm}))


def schedule_body(args) -> dict[str, Any] | None:
    if not args.every:
        return None
    return {"every": args.every, "keep_last": args.keep_last, "keep_hourly": args.keep_hourly,
            "keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly}


def cmd_volume_list(client, args) -> int:
    show(client.call("GET", f"/pools/{args.pool}/volumes")["volumes"], args.json,
         lambda rows: table(volume_rows(rows), VOLUME_COLUMNS))
    return 0


def cmd_volume_show(client, args) -> int:

    def render(volume):
        (row,) = volume_rows([volume])
        head = (f"volume {args.pool}/{volume['name']} at {volume['path']}: quota {row['quota']}, "
                f"referenced {row['referenced']}, exclusive {row['exclusive']}, schedule {row['schedule']}")
        return head + "\n" + table(snapshot_rows(volume.get("snapshots", [])), SNAPSHOT_COLUMNS)

    show(client.call("GET", f"/pools/{args.pool}/volumes/{args.name}"), args.json, render)
    return 0


def cmd_volume_create(client, args) -> int:
    body = {"name": args.name, "quota_bytes": parse_size(args.quota) if args.quota else None,
            "schedule": schedule_body(args)}
    return finish(client, args, client.call("POST", f"/pools/{args.pool}/volumes", body))


def cmd_volume_set(client, args) -> int:
    body: dict[str, Any] = {}
    if args.quota:
        body["quota_bytes"] = parse_size(args.quota)
    if args.no_quota:
        body["quota_bytes"] = None
    if args.every:
        body["schedule"] = schedule_body(args)
    if args.no_schedule:
        body["schedule"] = None
    if not body:
        print("nothing to change: give --quota/--no-quota and/or --every/--no-schedule")
        return 2
    reply = client.call("PATCH", f"/pools/{args.pool}/volumes/{args.name}", body)
    if reply.get("job"):
        job = follow(client, reply["job"], args.wait)
        show(job, args.json, render_job)
        return 0 if job["state"] in ("queued", "running", "success") else 1
    show(reply["volume"], args.json, lambda v: f"volume {args.pool}/{v['name']}: schedule "
                                              f"{(v.get('schedule') or {}).get('every', 'none')}")
    return 0


def cmd_volume_delete(client, args) -> int:
    return finish(client, args, client.call("DELETE", f"/pools/{args.pool}/volumes/{args.name}",
                                            params={"confirm": args.confirm}))


def cmd_snapshot_list(client, args) -> int:
    show(client.call("GET", f"/pools/{args.pool}/volumes/{args.volume}/snapshots")["snapshots"], args.json,
         lambda rows: table(snapshot_rows(rows), SNAPSHOT_COLUMNS))
    return 0


def cmd_snapshot_create(client, args) -> int:
    return finish(client, args, client.call("POST", f"/pools/{args.pool}/volumes/{args.volume}/snapshots",
                                            {"name": args.name}))


def cmd_snapshot_delete(client, args) -> int:
    return finish(client, args, client.call(
        "DELETE", f"/pools/{args.pool}/volumes/{args.volume}/snapshots/{args.snapshot}"))


def cmd_snapshot_rollback(client, args) -> int:
    return finish(client, args, client.call(
        "POST", f"/pools/{args.pool}/volumes/{args.volume}/snapshots/{args.snapshot}/rollback",
        {"confirm": args.confirm}))


def cmd_snapshot_clone(client, args) -> int:
    return finish(client, args, client.call(
        "POST", f"/pools/{args.pool}/volumes/{args.volume}/snapshots/{args.snapshot}/clone", {"name": args.new}))


def add_parsers(sub) -> None:
    def waiting(parser):
        parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
        return parser

    disk = sub.add_parser("disk", help="disks and SMART").add_subparsers(dest="action", required=True)
    disk_list = disk.add_parser("list", help="whole disks of every node")
    disk_list.add_argument("--node")
    disk_list.add_argument("--free", action="store_true", help="only disks Cairn may use")
    disk_list.set_defaults(func=cmd_disk_list)
    disk_show = disk.add_parser("show", help="one disk with its SMART health")
    disk_show.add_argument("node")
    disk_show.add_argument("disk")
    disk_show.set_defaults(func=cmd_disk_show)
    rescan = waiting(disk.add_parser("rescan", help="read a node's disks now (after plugging one in)"))
    rescan.add_argument("node")
    rescan.set_defaults(func=cmd_disk_rescan)
    selftest = waiting(disk.add_parser("selftest", help="run a SMART self-test"))
    selftest.add_argument("node")
    selftest.add_argument("disk")
    selftest.add_argument("--type", choices=("short", "long"), default="short")
    selftest.set_defaults(func=cmd_disk_selftest)

    pool = sub.add_parser("pool", help="btrfs pools").add_subparsers(dest="action", required=True)
    pool.add_parser("list", help="pools with health and space").set_defaults(func=cmd_pool_list)
    pool_show = pool.add_parser("show", help="one pool with devices and usage")
    pool_show.add_argument("name")
    pool_show.set_defaults(func=cmd_pool_show)
    create = waiting(pool.add_parser("create", help="create a pool over free disks of one node"))
    create.add_argument("name")
    create.add_argument("--node", required=True)
    create.add_argument("--disk", action="append", help="disk id (serial); repeat for each disk")
    create.add_argument("--array", help="make the pool on this md array instead of on disks")
    create.add_argument("--profile", help="single, raid1, raid1c3 or raid10 (default raid1 on 2+ disks)")
    create.add_argument("--metadata-profile")
    create.add_argument("--compression", default="none", help="none, zstd, lzo or zlib")
    create.set_defaults(func=cmd_pool_create)
    add = waiting(pool.add_parser("add-disk", help="add free disks to a pool and rebalance"))
    add.add_argument("name")
    add.add_argument("disks", nargs="+")
    add.add_argument("--no-balance", action="store_true")
    add.set_defaults(func=cmd_pool_add)
    replace = waiting(pool.add_parser("replace", help="replace a pool disk (or devid:N) by a free disk"))
    replace.add_argument("name")
    replace.add_argument("old")
    replace.add_argument("new")
    replace.set_defaults(func=cmd_pool_replace)
    for action, text in (("scrub", "verify every copy of every block"), ("balance", "spread data over the disks")):
        command = waiting(pool.add_parser(action, help=text))
        command.add_argument("name")
        command.set_defaults(func=cmd_pool_action)
    pool_set = pool.add_parser("set", help="change pool settings")
    pool_set.add_argument("name")
    pool_set.add_argument("--scrub-schedule", choices=("weekly", "monthly", "none"))
    pool_set.add_argument("--balance-schedule", choices=("weekly", "monthly", "none"))
    pool_set.set_defaults(func=cmd_pool_set)
    destroy = waiting(pool.add_parser("destroy", help="destroy a pool and everything on it"))
    destroy.add_argument("name")
    destroy.add_argument("--confirm", required=True, help="repeat the pool name")
    destroy.set_defaults(func=cmd_pool_destroy)

    md = sub.add_parser("raid", help="md RAID arrays").add_subparsers(dest="action", required=True)
    md.add_parser("list", help="arrays with health and rebuild progress").set_defaults(func=cmd_raid_list)
    md_show = md.add_parser("show", help="one array with its members")
    md_show.add_argument("name")
    md_show.set_defaults(func=cmd_raid_show)
    md_create = waiting(md.add_parser("create", help="create an array from free disks of one node"))
    md_create.add_argument("name")
    md_create.add_argument("--node", required=True)
    md_create.add_argument("--level", required=True, help="raid0, raid1, raid5, raid6 or raid10")
    md_create.add_argument("--disk", action="append", required=True, help="disk id; repeat for each disk")
    md_create.set_defaults(func=cmd_raid_create)
    for action, text in (("fail", "mark a member disk failed"),
                         ("grow", "add a free disk as an active member and reshape")):
        command = waiting(md.add_parser(action, help=text))
        command.add_argument("name")
        command.add_argument("disk")
        command.set_defaults(func=cmd_raid_member)
    md_replace = waiting(md.add_parser("replace", help="replace a member by a free disk and rebuild"))
    md_replace.add_argument("name")
    md_replace.add_argument("old")
    md_replace.add_argument("new")
    md_replace.set_defaults(func=cmd_raid_replace)
    md_delete = waiting(md.add_parser("delete", help="stop an array and wipe its members"))
    md_delete.add_argument("name")
    md_delete.add_argument("--confirm", required=True, help="repeat the array name")
    md_delete.set_defaults(func=cmd_raid_delete)

    def schedule_options(parser):
        parser.add_argument("--every", help="snapshot schedule: hourly, daily, weekly or <n>m")
        parser.add_argument("--keep-last", type=int, default=7)
        parser.add_argument("--keep-hourly", type=int, default=0)
        parser.add_argument("--keep-daily", type=int, default=7)
        parser.add_argument("--keep-weekly", type=int, default=4)

    volume = sub.add_parser("volume", help="volumes (btrfs subvolumes)").add_subparsers(dest="action", required=True)
    volume_list = volume.add_parser("list", help="volumes of a pool")
    volume_list.add_argument("pool")
    volume_list.set_defaults(func=cmd_volume_list)
    volume_show = volume.add_parser("show", help="one volume with its snapshots")
    volume_show.add_argument("pool")
    volume_show.add_argument("name")
    volume_show.set_defaults(func=cmd_volume_show)
    volume_create = waiting(volume.add_parser("create", help="create a volume"))
    volume_create.add_argument("pool")
    volume_create.add_argument("name")
    volume_create.add_argument("--quota", help="e.g. 10G")
    schedule_options(volume_create)
    volume_create.set_defaults(func=cmd_volume_create)
    volume_set = waiting(volume.add_parser("set", help="change quota or snapshot schedule"))
    volume_set.add_argument("pool")
    volume_set.add_argument("name")
    volume_set.add_argument("--quota")
    volume_set.add_argument("--no-quota", action="store_true")
    volume_set.add_argument("--no-schedule", action="store_true")
    schedule_options(volume_set)
    volume_set.set_defaults(func=cmd_volume_set)
    volume_delete = waiting(volume.add_parser("delete", help="delete a volume and its snapshots"))
    volume_delete.add_argument("pool")
    volume_delete.add_argument("name")
    volume_delete.add_argument("--confirm", required=True, help="repeat the volume name")
    volume_delete.set_defaults(func=cmd_volume_delete)

    snapshot = sub.add_parser("snapshot", help="snapshots of volumes").add_subparsers(dest="action", required=True)
    snap_list = snapshot.add_parser("list", help="snapshots of a volume")
    snap_list.add_argument("pool")
    snap_list.add_argument("volume")
    snap_list.set_defaults(func=cmd_snapshot_list)
    snap_create = waiting(snapshot.add_parser("create", help="take a read-only snapshot"))
    snap_create.add_argument("pool")
    snap_create.add_argument("volume")
    snap_create.add_argument("--name")
    snap_create.set_defaults(func=cmd_snapshot_create)
    for action, func, text in (("delete", cmd_snapshot_delete, "delete a snapshot"),
                               ("rollback", cmd_snapshot_rollback, "roll the volume back to a snapshot"),
                               ("clone", cmd_snapshot_clone, "clone a snapshot as a new volume")):
        command = waiting(snapshot.add_parser(action, help=text))
        command.add_argument("pool")
        command.add_argument("volume")
        command.add_argument("snapshot")
        if action == "rollback":
            command.add_argument("--confirm", required=True, help="repeat the volume name")
        if action == "clone":
            command.add_argument("new", help="name of the new volume")
        command.set_defaults(func=func)
