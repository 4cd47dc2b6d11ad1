"""cairnctl commands for file-access users, groups and shares.

    cairnctl user list | create NAME [--full-name F] [--group G ...] [--password-stdin] | delete NAME
    cairnctl user set NAME [--full-name F] [--group G ...] [--disable | --enable] [--password-stdin]
    cairnctl group list | create NAME [--description D] | delete NAME
    cairnctl share list | show NAME | delete NAME
    cairnctl share create NAME --pool P --volume V [--path DIR] [--smb] [--nfs CLIENT ...]
                          [--allow user:alice=rw --allow group:staff=ro ...] [--recycle-bin] [--previous-versions]
    cairnctl share set NAME [--allow ... (replaces all)] [--description D]

    cairnctl shares-config export [-o FILE]           (users with password hashes, groups, shares,
                                                       iSCSI targets with CHAP passwords)
    cairnctl shares-config import FILE                (all or nothing)

--nfs CLIENT is `match[,ro][,no_root_squash]`, e.g. `10.0.0.0/24` or `*.lan,ro`.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Any

from cairn.cli.output import show, table

USER_COLUMNS = [("NAME", "name"), ("UID", "uid"), ("FULL NAME", "full_name"), ("GROUPS", "groups"),
                ("DISABLED", "disabled")]
GROUP_COLUMNS = [("NAME", "name"), ("GID", "gid"), ("DESCRIPTION", "description")]
SHARE_COLUMNS = [("NAME", "name"), ("POOL", "pool"), ("VOLUME", "volume"), ("SMB", "smb"), ("NFS", "nfs"),
                 ("STATE", "served"), ("PATH", "path")]


def parse_allow(values: list[str] | None) -> list[dict[str, str]]:
    """['user:alice=rw', 'group:staff=ro'] → permission entries (the API checks names and access)."""
    entries = []
    for value in values or []:
        principal, sep, access = value.rpartition("=")
        if not sep:
            raise ValueError(f"--allow wants principal=access, e.g. user:alice=rw, not {value!r}")
        entries.append({"principal": principal, "access": access})
    return entries


def parse_nfs(values: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    clients = []
    for value in values:
        match, *flags = value.split(",")
        clients.append({"match": match, "access": "ro" if "ro" in flags else "rw",
                        "root_squash": "no_root_squash" not in flags})
    return {"clients": clients}


def served(state: dict[str, Any] | None) -> str:
    """A share's state in words: served by <node>, waiting for <node>, or the node's error."""
    if not state:
        return "-"
    node = state.get("node") or "?"
    if state.get("state") == "served":
        return f"served by {node}"
    if state.get("state") == "error":
        return f"error on {node}: {state.get('error')}"
    return f"waiting for {node}"


def share_rows(shares: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**s, "smb": "yes" if s.get("smb") is not None else "no",
             "nfs": ", ".join(c["match"] for c in (s.get("nfs") or {}).get("clients", [])) or "no",
             "served": served(s.get("state"))} for s in shares]


def read_password(args, name: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(f"Password for {name}: ")


def cmd_user_list(client, args) -> int:
    show(client.call("GET", "/file-users")["users"], args.json,
         lambda rows: table([{**r, "groups": ",".join(r["groups"])} for r in rows], USER_COLUMNS))
    return 0


def cmd_user_create(client, args) -> int:
    body = {"name": args.name, "password": read_password(args, args.name), "full_name": args.full_name or "",
            "groups": args.group or []}
    show(client.call("POST", "/file-users", body), args.json, lambda u: f"user {u['name']} created (uid {u['uid']})")
    return 0


def cmd_user_set(client, args) -> int:
    body: dict[str, Any] = {}
    if args.full_name is not None:
        body["full_name"] = args.full_name
    if args.group is not None:
        body["groups"] = args.group
    if args.disable or args.enable:
        body["disabled"] = bool(args.disable)
    if args.password_stdin:
        body["password"] = read_password(args, args.name)
    show(client.call("PATCH", f"/file-users/{args.name}", body), args.json, lambda u: f"user {u['name']} changed")
    return 0


def cmd_user_delete(client, args) -> int:
    show(client.call("DELETE", f"/file-users/{args.name}"), args.json, lambda m: m["message"])
    return 0


def cmd_group_list(client, args) -> int:
    show(client.call("GET", "/file-groups")["groups"], args.json, lambda rows: table(rows, GROUP_COLUMNS))
    return 0


def cmd_group_create(client, args) -> int:
    show(client.call("POST", "/file-groups", {"name": args.name, "description": args.description or ""}),
         args.json, lambda g: f"group {g['name']} created (gid {g['gid']})")
    return 0


def cmd_group_delete(client, args) -> int:
    show(client.call("DELETE", f"/file-groups/{args.name}"), args.json, lambda m: m["message"])
    return 0


def cmd_share_list(client, args) -> int:
    show(client.call("GET", "/shares")["shares"], args.json, lambda rows: table(share_rows(rows), SHARE_COLUMNS))
    return 0


def render_share(share: dict[str, Any]) -> str:
    lines = [f"share {share['name']}: {share['path']} (pool {share['pool']}, volume {share['volume']})"]
    if share.get("smb") is not None:
        lines.append("  smb: " + ", ".join(f"{k}={v}" for k, v in share["smb"].items()))
    for nfs_client in (share.get("nfs") or {}).get("clients", []):
        lines.append(f"  nfs: {nfs_client['match']} {nfs_client['access']}"
                     + ("" if nfs_client.get("root_squash", True) else " no_root_squash"))
    for entry in share.get("permissions", []):
        lines.append(f"  {entry['principal']}: {entry['access']}")
    return "\n".join(lines)


def cmd_share_show(client, args) -> int:
    show(client.call("GET", f"/shares/{args.name}"), args.json, render_share)
    return 0


def cmd_share_create(client, args) -> int:
    smb = None
    if args.smb or args.recycle_bin or args.previous_versions or not args.nfs:
        smb = {"recycle_bin": args.recycle_bin, "previous_versions": args.previous_versions}
    body = {"name": args.name, "pool": args.pool, "volume": args.volume, "description": args.description or "",
            "smb": smb, "nfs": parse_nfs(args.nfs), "permissions": parse_allow(args.allow)}
    if args.path:
        body["path"] = args.path
    show(client.call("POST", "/shares", body), args.json, render_share)
    return 0


def cmd_share_set(client, args) -> int:
    body: dict[str, Any] = {}
    if args.allow is not None:
        body["permissions"] = parse_allow(args.allow)
    if args.description is not None:
        body["description"] = args.description
    show(client.call("PATCH", f"/shares/{args.name}", body), args.json, render_share)
    return 0


def cmd_share_delete(client, args) -> int:
    show(client.call("DELETE", f"/shares/{args.name}"), args.json, lambda m: m["message"])
    return 0


def cmd_config_export(client, args) -> int:
    document = client.call("GET", "/shares-config")
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if args.output:
        # the document holds password hashes and CHAP passwords: readable by its owner only
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        print(f"exported {len(document['users'])} users, {len(document['groups'])} groups, "
              f"{len(document['shares'])} shares, {len(document.get('iscsi_targets', []))} iSCSI targets "
              f"to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_config_import(client, args) -> int:
    with open(args.file) as handle:
        try:
            document = json.load(handle)
        except ValueError as error:
            raise ValueError(f"{args.file} is not JSON: {error}") from None
    show(client.call("POST", "/shares-config", document), args.json,
         lambda c: f"imported {c['groups']} groups, {c['users']} users, {c['shares']} shares, "
                   f"{c.get('iscsi_targets', 0)} iSCSI targets ({c['unchanged']} already there)")
    return 0


def add_parsers(sub) -> None:
    user = sub.add_parser("user", help="file-access users (SMB/NFS)").add_subparsers(dest="action", required=True)
    user.add_parser("list", help="list users").set_defaults(func=cmd_user_list)
    for action, func in (("create", cmd_user_create), ("set", cmd_user_set)):
        command = user.add_parser(action, help=f"{action} a user")
        command.add_argument("name")
        command.add_argument("--full-name")
        command.add_argument("--group", action="append", help="group (repeat); with set: replaces the list")
        command.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        if action == "set":
            command.add_argument("--disable", action="store_true")
            command.add_argument("--enable", action="store_true")
        command.set_defaults(func=func)
    user_delete = user.add_parser("delete", help="delete a user")
    user_delete.add_argument("name")
    user_delete.set_defaults(func=cmd_user_delete)

    group = sub.add_parser("group", help="file-access groups").add_subparsers(dest="action", required=True)
    group.add_parser("list", help="list groups").set_defaults(func=cmd_group_list)
    group_create = group.add_parser("create", help="create a group")
    group_create.add_argument("name")
    group_create.add_argument("--description")
    group_create.set_defaults(func=cmd_group_create)
    group_delete = group.add_parser("delete", help="delete a group")
    group_delete.add_argument("name")
    group_delete.set_defaults(func=cmd_group_delete)

    share = sub.add_parser("share", help="SMB and NFS shares").add_subparsers(dest="action", required=True)
    share.add_parser("list", help="list shares").set_defaults(func=cmd_share_list)
    for action, func in (("show", cmd_share_show), ("delete", cmd_share_delete)):
        command = share.add_parser(action, help=f"{action} a share")
        command.add_argument("name")
        command.set_defaults(func=func)
    create = share.add_parser("create", help="share a volume over SMB and/or NFS")
    create.add_argument("name")
    create.add_argument("--pool", required=True)
    create.add_argument("--volume", required=True)
    create.add_argument("--path", help="a directory inside the volume (default: its root)")
    create.add_argument("--description")
    create.add_argument("--smb", action="store_true", help="share over SMB (the default when --nfs is not given)")
    create.add_argument("--nfs", action="append", help="export over NFS to match[,ro][,no_root_squash] (repeat)")
    create.add_argument("--allow", action="append", help="principal=access, e.g. user:alice=rw (repeat)")
    create.add_argument("--recycle-bin", action="store_true")
    create.add_argument("--previous-versions", action="store_true", help="scheduled snapshots as Previous Versions")
    create.set_defaults(func=cmd_share_create)
    share_set = share.add_parser("set", help="change a share")
    share_set.add_argument("name")
    share_set.add_argument("--allow", action="append", help="principal=access (repeat; replaces all)")
    share_set.add_argument("--description")
    share_set.set_defaults(func=cmd_share_set)

    config = sub.add_parser("shares-config", help="export/import users, groups, shares and iSCSI targets")
    config = config.add_subparsers(dest="action", required=True)
    export = config.add_parser("export", help="write them all as one JSON document")
    export.add_argument("-o", "--output", help="file (mode 0600; default: standard output)")
    export.set_defaults(func=cmd_config_export)
    load = config.add_parser("import", help="add them from an exported document (all or nothing)")
    load.add_argument("file")
    load.set_defaults(func=cmd_config_import)
