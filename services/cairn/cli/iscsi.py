"""cairnctl commands for iSCSI targets and their LUNs.

    cairnctl iscsi list | show NAME
    cairnctl iscsi create NAME --pool P --volume V --initiator IQN [--initiator IQN ...] [--lun SIZE ...]
                          [--iqn IQN] [--description D] [--chap-user U [--chap-password-stdin]]
    cairnctl iscsi set NAME [--initiator IQN ... (replaces all)] [--description D]
                       [--chap-user U [--chap-password-stdin] | --no-chap]
    cairnctl iscsi delete NAME [--confirm NAME]            (with LUNs: --confirm NAME deletes their data)
    cairnctl iscsi lun add NAME SIZE [--lun N]             (SIZE: bytes or like 512M, 10G, 2T)
    cairnctl iscsi lun grow NAME LUN SIZE
    cairnctl iscsi lun delete NAME LUN --confirm LUN

Sizes go to the API as written (it reads "10G"); the CHAP password is asked for (or read from
standard input) and never shown.
"""

from __future__ import annotations

import getpass
import json
import sys
from typing import Any

from cairn.cli.output import show, table
from cairn.cli.storage import human

TARGET_COLUMNS = [("NAME", "name"), ("POOL", "pool"), ("VOLUME", "volume"), ("LUNS", "luns"),
                  ("INITIATORS", "initiators"), ("CHAP", "chap"), ("IQN", "iqn")]


def size_value(text: str) -> int | str:
    """A size as the API takes it: a plain number of bytes as a number, anything else as written."""
    return int(text) if text.isdigit() else text


def target_rows(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "luns": ", ".join(f"{lun['lun']}:{human(lun['size'])}" for lun in t["luns"]) or "-",
             "initiators": len(t["initiators"]), "chap": (t.get("chap") or {}).get("user")} for t in targets]


def render_target(target: dict[str, Any]) -> str:
    lines = [f"iSCSI target {target['name']}: {target['iqn']} (pool {target['pool']}, volume {target['volume']})"]
    if target.get("description"):
        lines.append(f"  description: {target['description']}")
    for lun in target["luns"]:
        lines.append(f"  lun {lun['lun']}: {human(lun['size'])}  serial {lun['serial']}  {lun['file']}")
    for initiator in target["initiators"]:
        lines.append(f"  initiator: {initiator}")
    chap = target.get("chap")
    lines.append(f"  chap: user {chap['user']} (password set)" if chap else "  chap: off")
    if target.get("status"):
        lines.append(f"  status: {json.dumps(target['status'], sort_keys=True)}")
    return "\n".join(lines)


def render_lun(lun: dict[str, Any]) -> str:
    return f"lun {lun['lun']}: {human(lun['size'])}  serial {lun['serial']}  {lun['file']}"


def chap_body(args) -> dict[str, str] | None:
    """{user, password} from --chap-user and the password (standard input or a prompt)."""
    if not args.chap_user:
        return None
    if args.chap_password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"CHAP password for {args.chap_user} (12-16 characters): ")
    return {"user": args.chap_user, "password": password}


def cmd_list(client, args) -> int:
    show(client.call("GET", "/iscsi-targets")["targets"], args.json,
         lambda rows: table(target_rows(rows), TARGET_COLUMNS))
    return 0


def cmd_show(client, args) -> int:
    show(client.call("GET", f"/iscsi-targets/{args.name}"), args.json, render_target)
    return 0


def cmd_create(client, args) -> int:
    body: dict[str, Any] = {"name": args.name, "pool": args.pool, "volume": args.volume,
                            "initiators": args.initiator or [], "description": args.description or "",
                            "chap": chap_body(args), "luns": [{"size": size_value(s)} for s in args.lun or []]}
    if args.iqn:
        body["iqn"] = args.iqn
    show(client.call("POST", "/iscsi-targets", body), args.json, render_target)
    return 0


def cmd_set(client, args) -> int:
    body: dict[str, Any] = {}
    if args.initiator is not None:
        body["initiators"] = args.initiator
    if args.description is not None:
        body["description"] = args.description
    if args.no_chap:
        body["chap"] = None
    elif args.chap_user:
        body["chap"] = chap_body(args)
    show(client.call("PATCH", f"/iscsi-targets/{args.name}", body), args.json, render_target)
    return 0


def cmd_delete(client, args) -> int:
    params = {"confirm": args.confirm} if args.confirm is not None else None
    show(client.call("DELETE", f"/iscsi-targets/{args.name}", params=params), args.json, lambda m: m["message"])
    return 0


def cmd_lun_add(client, args) -> int:
    body: dict[str, Any] = {"size": size_value(args.size)}
    if args.lun is not None:
        body["lun"] = args.lun
    show(client.call("POST", f"/iscsi-targets/{args.name}/luns", body), args.json, render_lun)
    return 0


def cmd_lun_grow(client, args) -> int:
    show(client.call("PATCH", f"/iscsi-targets/{args.name}/luns/{args.lun}", {"size": size_value(args.size)}),
         args.json, render_lun)
    return 0


def cmd_lun_delete(client, args) -> int:
    show(client.call("DELETE", f"/iscsi-targets/{args.name}/luns/{args.lun}", params={"confirm": args.confirm}),
         args.json, lambda m: m["message"])
    return 0


def add_chap_arguments(command) -> None:
    command.add_argument("--chap-user", help="require CHAP with this user (the password is asked for)")
    command.add_argument("--chap-password-stdin", action="store_true",
                         help="read the CHAP password (12-16 characters) from standard input")


def add_parsers(sub) -> None:
    iscsi = sub.add_parser("iscsi", help="iSCSI targets and their LUNs").add_subparsers(dest="action", required=True)
    iscsi.add_parser("list", help="list targets").set_defaults(func=cmd_list)
    target_show = iscsi.add_parser("show", help="show a target")
    target_show.add_argument("name")
    target_show.set_defaults(func=cmd_show)

    create = iscsi.add_parser("create", help="make a target with LUN files in a volume")
    create.add_argument("name")
    create.add_argument("--pool", required=True)
    create.add_argument("--volume", required=True, help="the volume that holds the LUN files")
    create.add_argument("--initiator", action="append", help="IQN of an initiator allowed to connect (repeat)")
    create.add_argument("--lun", action="append", help="make a LUN of this size, e.g. 10G (repeat)")
    create.add_argument("--iqn", help="the target's IQN (default: iqn.2026-11.invalid.cairn:NAME)")
    create.add_argument("--description")
    add_chap_arguments(create)
    create.set_defaults(func=cmd_create)

    change = iscsi.add_parser("set", help="change a target's initiators, description or CHAP")
    change.add_argument("name")
    change.add_argument("--initiator", action="append", help="initiator IQN (repeat; replaces all)")
    change.add_argument("--description")
    add_chap_arguments(change)
    change.add_argument("--no-chap", action="store_true", help="stop requiring CHAP")
    change.set_defaults(func=cmd_set)

    delete = iscsi.add_parser("delete", help="delete a target and the data of its LUNs")
    delete.add_argument("name")
    delete.add_argument("--confirm", help="repeat the name (needed when the target has LUNs)")
    delete.set_defaults(func=cmd_delete)

    lun = iscsi.add_parser("lun", help="add, grow or delete a LUN").add_subparsers(dest="lun_action", required=True)
    lun_add = lun.add_parser("add", help="add a LUN")
    lun_add.add_argument("name")
    lun_add.add_argument("size", help="bytes or like 512M, 10G, 2T")
    lun_add.add_argument("--lun", type=int, help="LUN number (default: the lowest free one)")
    lun_add.set_defaults(func=cmd_lun_add)
    lun_grow = lun.add_parser("grow", help="grow a LUN (never shrinks)")
    lun_grow.add_argument("name")
    lun_grow.add_argument("lun")
    lun_grow.add_argument("size", help="the new size: bytes or like 20G")
    lun_grow.set_defaults(func=cmd_lun_grow)
    lun_delete = lun.add_parser("delete", help="delete a LUN and its data")
    lun_delete.add_argument("name")
    lun_delete.add_argument("lun")
    lun_delete.add_argument("--confirm", required=True, help="repeat the LUN number")
    lun_delete.set_defaults(func=cmd_lun_delete)
