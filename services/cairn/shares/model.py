"""Share data types and pure decisions: file-access users and groups, shares with their SMB and
NFS settings and permissions, validation, id allocation and the effective access of a user.
No I/O here (no commands, no store, no clock).

Store layout (under the cluster root; who writes what):

    share-users/<name>      User record. Written by the API (create, change, disable, delete).
    share-groups/<name>     Group record. Written by the API.
    shares/<name>           Share record. Written by the API; the agents of the node that owns the
                            share's pool render smb.conf and exports from it (smbconf.py, exports.py).

Invariants kept by the checks below:

- User and group names are POSIX-ish (`[a-z_][a-z0-9_.-]{0,31}`), never a system account's name,
  and ids come from 10000 upwards (below Debian's UID_MAX of 60000), so they never collide with
  accounts the OS or its packages create.
- A share's path is absolute, normalised, and lies inside its volume `<pools_root>/<pool>/<volume>`
  (`..` is resolved lexically; symlinks are not looked at here: the backend opens paths safely).
- Every text that ends up in smb.conf (share name, description, path) can be written there as is:
  Samba's parser merges runs of spaces, trims the ends of a value, continues a line that ends in a
  backslash, and substitutes %-variables (`%U`, `%m`, `%$(VAR)`, ...) in names, paths and comments
  with no way to escape a '%'. Texts that would change on the way are refused, not mangled.
- Permissions name only users and groups that exist; one entry per principal.

Effective access (`effective_access`): an entry for the user wins over the groups; among the
user's groups `none` wins, then `rw` over `ro`; no entry at all means `none`.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from cairn.errors import Conflict, ValidationError
from cairn.storage import model as storage_model
from cairn.storage.model import raise_problems

ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
NT_HASH = re.compile(r"[0-9A-Fa-f]{32}")
FIRST_ID = 10000
LAST_ID = 59999                  # Debian's UID_MAX/GID_MAX is 60000; above are system ranges

# Names of accounts and groups that Debian, its packages or Cairn itself use (or that mean
# something special to SMB clients): a file-access user or group of that name would be confused
# with them by Samba, NFS or a person reading an ACL.
RESERVED_NAMES = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "_apt", "messagebus",
    "sshd", "_ssh", "libvirt-qemu", "libvirt-dnsmasq", "libvirt", "kvm", "etcd", "statd", "_rpc",
    "tss", "polkitd", "avahi", "dnsmasq", "_chrony", "chrony", "ntpsec", "adm", "tty", "disk",
    "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio", "dip",
    "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff", "users", "input",
    "sgx", "render", "netdev", "crontab", "sambashare", "admin", "administrator", "guest", "cairn",
})
RESERVED_PREFIXES = ("systemd-",)

SHARE_NAME_MAX = 80
SHARE_NAME_FORBIDDEN = '/\\:*?"<>|[]'     # Windows' list, plus the brackets of smb.conf sections
SAMBA_RESERVED = frozenset({"global", "homes", "printers", "print$", "ipc$"})
DESCRIPTION_MAX = 256
FULL_NAME_MAX = 100
PATH_MAX_BYTES = 1024            # nfs-utils' NFS_MAXPATHLEN
SAMBA_VARIABLE = re.compile(r"%[A-Za-z$]")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")

ACCESS = ("ro", "rw", "none")
NFS_ACCESS = ("rw", "ro")
PRINCIPAL_KINDS = ("user", "group")


@dataclass(frozen=True)
class User:
    """A file-access user (SMB and NFS), not a login user of the appliance."""
    name: str
    uid: int
    full_name: str = ""
    groups: tuple[str, ...] = ()
    disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "User":
        data = dict(data)
        data["groups"] = tuple(data.get("groups") or ())
        return cls(**data)


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Group":
        return cls(**data)


@dataclass(frozen=True)
class Permission:
    principal: str                         # "user:<name>" or "group:<name>"
    access: str                            # "ro", "rw" or "none" (denies even if a group grants)


@dataclass(frozen=True)
class SmbOptions:
    browseable: bool = True
    read_only: bool = False                # read-only for everyone, whatever the permissions say
    guest_ok: bool = False                 # guests may read (never write)
    recycle_bin: bool = False              # deleted files go to .recycle/<user> in the share
    previous_versions: bool = False        # scheduled snapshots as Windows' "Previous Versions"


@dataclass(frozen=True)
class NfsClient:
    match: str                             # host, address, CIDR network, "*.domain" or "*"
    access: str = "rw"                     # "rw" or "ro"
    root_squash: bool = True


@dataclass(frozen=True)
class NfsOptions:
    clients: tuple[NfsClient, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NfsOptions":
        return cls(tuple(NfsClient(**client) for client in data.get("clients") or ()))


@dataclass(frozen=True)
class Share:
    name: str
    pool: str
    volume: str
    path: str                              # absolute, normalised, inside /pools/<pool>/<volume>
    description: str = ""
    smb: SmbOptions | None = None
    nfs: NfsOptions | None = None
    permissions: tuple[Permission, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Share":
        data = dict(data)
        if data.get("smb") is not None:
            data["smb"] = SmbOptions(**data["smb"])
        if data.get("nfs") is not None:
            data["nfs"] = NfsOptions.from_dict(data["nfs"])
        data["permissions"] = tuple(Permission(**entry) for entry in data.get("permissions") or ())
        return cls(**data)


# --- pure decisions ---------------------------------------------------------------------------
def effective_access(share: Share, user: str, user_groups: Iterable[str]) -> str:
    """What `user` (a member of `user_groups`) may do on `share`: "rw", "ro" or "none"."""
    entries = {entry.principal: entry.access for entry in share.permissions}
    own = entries.get(f"user:{user}")
    if own is not None:
        return own
    granted = {entries.get(f"group:{group}") for group in user_groups}
    for access in ("none", "rw", "ro"):
        if access in granted:
            return access
    return "none"


def access_by_user(share: Share, users: dict[str, User], groups: dict[str, Group]) -> dict[str, str]:
    """Every known user's effective access to the share, by name (sorted)."""
    result: dict[str, str] = {}
    for name in sorted(users):
        user = users[name]
        if user.disabled:
            result[name] = "none"
            continue
        result[name] = effective_access(share, name, [g for g in user.groups if g in groups])
    return result


def allocate_id(taken: Iterable[int], first: int = FIRST_ID, last: int = LAST_ID) -> int:
    """The lowest id from `first` to `last` that is not taken."""
    used = {value for value in taken if first <= value <= last}
    for candidate in range(first, last + 1):
        if candidate not in used:
            return candidate
    raise Conflict(f"no free id left from {first} to {last}")


def volume_path(pools_root: str, pool: str, volume: str) -> str:
    return f"{storage_model.pool_path(posixpath.normpath(pools_root), pool)}/{volume}"


def share_key(name: str) -> str:
    """Share names are compared ignoring case (SMB clients do)."""
    return name.casefold()


# --- validation (pure) ------------------------------------------------------------------------
def smb_text_problem(value: str) -> str | None:
    """Why `value` cannot be written into smb.conf unchanged, or None if it can."""
    for char in value:
        if not char.isprintable():             # control characters, line breaks, tabs, odd spaces
            return f"must contain only printable characters and plain spaces (found U+{ord(char):04X})"
    if value.startswith(" ") or value.endswith(" "):
        return "must not start or end with a space (smb.conf cannot keep it)"
    if "  " in value:
        return "must not contain two spaces in a row (Samba's config parser merges them into one)"
    variable = SAMBA_VARIABLE.search(value)
    if variable:
        return (f"contains {variable.group()!r}, which Samba would replace (it substitutes "
                "%-variables and has no escape for '%'); a '%' before a space, digit or sign is fine")
    if value.endswith("\\"):
        return "must not end with '\\' (it would continue the line in smb.conf)"
    return None


def note(problems: dict[str, str], field_name: str, problem: str | None) -> None:
    if problem:
        problems[field_name] = problem


def account_name_problem(value: Any, what: str, taken_names: Iterable[str] = ()) -> str | None:
    """A user or group name (`what`: "user" or "group"): POSIX-ish, not a system name, not taken."""
    if not isinstance(value, str) or not ACCOUNT_NAME.fullmatch(value):
        return f"{what} name must be 1-32 of a-z, 0-9, '_', '.' and '-', starting with a letter or '_'"
    if value in RESERVED_NAMES or value.startswith(RESERVED_PREFIXES):
        return f"{value!r} is reserved for the system"
    if value in set(taken_names):
        return f"a {what} named {value!r} exists already"
    return None


def nt_hash_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not NT_HASH.fullmatch(value):
        return "missing or not an NT hash (32 hex digits)"
    return None


def quoted(chars: Iterable[str]) -> str:
    """Characters for a message, quoted plainly (repr would double a backslash)."""
    return ", ".join(f"'{char}'" for char in chars)


def text_problem(value: Any, limit: int, forbidden: str = "", why: str = "") -> str | None:
    """Free text (a description, a full name): at most `limit` characters, fit for smb.conf."""
    if not isinstance(value, str):
        return "must be text"
    if len(value) > limit:
        return f"must be at most {limit} characters, not {len(value)}"
    bad = sorted({char for char in value if char in forbidden})
    if bad:
        return f"must not contain {quoted(bad)}{why}"
    return smb_text_problem(value)


def check_bool(value: Any, field_name: str, problems: dict[str, str]) -> bool:
    if not isinstance(value, bool):
        problems[field_name] = "must be true or false"
        return False
    return value


def check_id(value: Any, field_name: str, problems: dict[str, str], taken: set[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not FIRST_ID <= value <= LAST_ID:
        problems[field_name] = f"must be a whole number from {FIRST_ID} to {LAST_ID}"
        return 0
    if value in taken:
        problems[field_name] = f"{value} is taken"
        return 0
    return value


def unknown_fields(data: dict[str, Any], known: Iterable[str], problems: dict[str, str],
                   prefix: str = "") -> None:
    for key in sorted(set(map(str, data)) - set(known)):
        problems[f"{prefix}{key}"] = "unknown setting"


def check_user(data: Any, taken_names: Iterable[str], groups: Iterable[str] | None = None,
               taken_uids: Iterable[int] = ()) -> User:
    """A new user from API input. `groups` (when given) are the names that exist; without a
    `uid` the lowest free one is allocated from `taken_uids`."""
    problems: dict[str, str] = {}
    if not isinstance(data, dict):
        raise ValidationError({"user": "must be an object"})
    unknown_fields(data, User.__dataclass_fields__, problems)
    name = data.get("name")
    note(problems, "name", account_name_problem(name, "user", taken_names))
    full_name = "" if data.get("full_name") is None else data["full_name"]
    note(problems, "full_name", text_problem(full_name, FULL_NAME_MAX, ":,",
                                             " (':' and ',' separate fields in /etc/passwd)"))
    member_of = check_group_list(data.get("groups"), problems, groups)
    disabled = check_bool(data.get("disabled", False), "disabled", problems)
    used = set(taken_uids)
    uid = (check_id(data["uid"], "uid", problems, used) if data.get("uid") is not None
           else allocate_id(used))
    raise_problems(problems)
    return User(name, uid, full_name, member_of, disabled)


def check_group_list(value: Any, problems: dict[str, str],
                     groups: Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        problems["groups"] = "must be a list of group names"
        return ()
    known = None if groups is None else set(groups)
    seen: list[str] = []
    for index, group in enumerate(value):
        key = f"groups[{index}]"
        if not isinstance(group, str) or not ACCOUNT_NAME.fullmatch(group):
            problems[key] = "must be a group name"
        elif known is not None and group not in known:
            problems[key] = f"no group named {group!r}"
        elif group in seen:
            problems[key] = f"{group!r} is listed twice"
        else:
            seen.append(group)
    return tuple(seen)


def check_group(data: Any, taken_names: Iterable[str], taken_gids: Iterable[int] = ()) -> Group:
    """A new group from API input; without a `gid` the lowest free one is allocated."""
    problems: dict[str, str] = {}
    if not isinstance(data, dict):
        raise ValidationError({"group": "must be an object"})
    unknown_fields(data, Group.__dataclass_fields__, problems)
    name = data.get("name")
    note(problems, "name", account_name_problem(name, "group", taken_names))
    description = "" if data.get("description") is None else data["description"]
    note(problems, "description", text_problem(description, DESCRIPTION_MAX))
    used = set(taken_gids)
    gid = (check_id(data["gid"], "gid", problems, used) if data.get("gid") is not None
           else allocate_id(used))
    raise_problems(problems)
    return Group(name, gid, description)


def share_name_problem(value: Any, taken_names: Iterable[str] = ()) -> str | None:
    if not isinstance(value, str) or not value or len(value) > SHARE_NAME_MAX:
        length = f", not {len(value)}" if isinstance(value, str) and value else ""
        return f"share name must be 1-{SHARE_NAME_MAX} characters{length}"
    bad = sorted({char for char in value if char in SHARE_NAME_FORBIDDEN})
    if bad:
        return (f"must not contain {quoted(bad)} "
                f"(share names cannot hold {' '.join(SHARE_NAME_FORBIDDEN)})")
    if value in (".", ".."):
        return f"{value!r} is not a share name"
    if value.endswith("."):
        return "must not end with '.' (Windows drops trailing dots)"
    problem = smb_text_problem(value)
    if problem:
        return problem
    if share_key(value) in SAMBA_RESERVED:
        return f"{value!r} is reserved by Samba (share names ignore case)"
    for other in taken_names:
        if share_key(other) == share_key(value):
            return f"a share named {other!r} exists already (share names ignore case)"
    return None


def share_path_problem(value: Any, pool: str, volume: str, root: str) -> str | None:
    """Why `value` cannot be the directory of a share on `root` (the volume), or None."""
    if not isinstance(value, str) or not value:
        return f"must be an absolute path inside {root}"
    if not value.startswith("/"):
        return f"{value!r} is not absolute; give a path inside {root}"
    for char, why in (('"', "smb.conf strips quotes around values and exports(5) quotes with them"),
                      ("\\", "smb.conf continues lines with it and exports(5) decodes escapes with it")):
        if char in value:
            return f"must not contain {quoted(char)} ({why})"
    problem = smb_text_problem(value)
    if problem:
        return problem
    normal = posixpath.normpath(value)
    if normal != root and not normal.startswith(root + "/"):
        shown = value if normal == value.rstrip("/") else f"{value} resolves to {normal}, which"
        return f"{shown} is outside volume {pool}/{volume} ({root})"
    if len(normal.encode()) > PATH_MAX_BYTES:
        return f"must be at most {PATH_MAX_BYTES} bytes long (UTF-8)"
    return None


def check_smb(value: Any, problems: dict[str, str]) -> SmbOptions | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems["smb"] = "must be an object or null"
        return None
    before = len(problems)
    unknown_fields(value, SmbOptions.__dataclass_fields__, problems, "smb.")
    flags = {key: check_bool(value.get(key, getattr(SmbOptions, key)), f"smb.{key}", problems)
             for key in SmbOptions.__dataclass_fields__}
    return SmbOptions(**flags) if len(problems) == before else None


def check_client_match(value: Any) -> tuple[str, str | None]:
    """An exports(5) client: (canonical form, None) or ("", what is wrong)."""
    if not isinstance(value, str) or not value:
        return "", ("empty; give a host name, an address, a network like 192.168.1.0/24, "
                    "a wildcard like *.example.com, or * for everyone")
    if value == "*":
        return value, None
    if "/" in value:
        try:
            return str(ipaddress.ip_network(value)), None
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return "", f"{value!r} is not a network in CIDR form (like 192.168.1.0/24 or fd00::/64)"
        return "", f"{value} has host bits set; did you mean {loose}?"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if getattr(address, "scope_id", None):
            return "", f"{value}: zone indexes ('%...') cannot be used in exports"
        return str(address), None
    name = value[2:] if value.startswith("*.") else value
    if "*" in name:
        return "", f"{value!r}: only a leading '*.' wildcard is allowed (like *.example.com)"
    labels = name.split(".")
    if len(name) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels):
        return "", f"{value!r} is not a host name, address, network or wildcard"
    if labels[-1].isdigit():
        return "", f"{value!r} is not a valid IP address (and host names do not end in a number)"
    return value.lower(), None


def check_nfs(value: Any, problems: dict[str, str]) -> NfsOptions | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems["nfs"] = "must be an object or null"
        return None
    before = len(problems)
    unknown_fields(value, NfsOptions.__dataclass_fields__, problems, "nfs.")
    entries = value.get("clients")
    if not isinstance(entries, (list, tuple)) or not entries:
        problems["nfs.clients"] = "at least one client is needed (use '*' for everyone)"
        return None
    clients: list[NfsClient] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        prefix = f"nfs.clients[{index}]"
        if not isinstance(entry, dict):
            problems[prefix] = "must be an object with match, access and root_squash"
            continue
        unknown_fields(entry, NfsClient.__dataclass_fields__, problems, f"{prefix}.")
        match, problem = check_client_match(entry.get("match"))
        if problem:
            problems[f"{prefix}.match"] = problem
        elif match in seen:
            problems[f"{prefix}.match"] = f"{match} is listed twice (also clients[{seen[match]}])"
        else:
            seen[match] = index
        access = entry.get("access", "rw")
        if access not in NFS_ACCESS:
            problems[f"{prefix}.access"] = "must be rw or ro"
        squash = check_bool(entry.get("root_squash", True), f"{prefix}.root_squash", problems)
        clients.append(NfsClient(match, access, squash))
    return NfsOptions(tuple(clients)) if len(problems) == before else None


def check_permissions(value: Any, users: Iterable[str], groups: Iterable[str],
                      problems: dict[str, str]) -> tuple[Permission, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        problems["permissions"] = "must be a list of {principal, access}"
        return ()
    known = {"user": set(users), "group": set(groups)}
    entries: list[Permission] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        prefix = f"permissions[{index}]"
        if not isinstance(entry, dict):
            problems[prefix] = "must be an object with principal and access"
            continue
        unknown_fields(entry, Permission.__dataclass_fields__, problems, f"{prefix}.")
        principal = entry.get("principal")
        kind, _, target = principal.partition(":") if isinstance(principal, str) else ("", "", "")
        if kind not in PRINCIPAL_KINDS or not target:
            problems[f"{prefix}.principal"] = "must be 'user:<name>' or 'group:<name>'"
        elif target not in known[kind]:
            problems[f"{prefix}.principal"] = f"no {kind} named {target!r}"
        elif principal in seen:
            problems[f"{prefix}.principal"] = f"{principal} is listed twice"
        else:
            seen.add(principal)
        access = entry.get("access")
        if access not in ACCESS:
            problems[f"{prefix}.access"] = "must be ro, rw or none"
        entries.append(Permission(principal, access))
    return tuple(entries)


SHARE_FIELDS = tuple(Share.__dataclass_fields__)


def check_share(data: Any, users: Iterable[str], groups: Iterable[str], pools_root: str = "/pools",
                taken_names: Iterable[str] = ()) -> Share:
    """A share from API input, with every problem at once (ValidationError, keyed by field path).
    `users` and `groups` are the names that exist; `taken_names` the other shares' names."""
    if not isinstance(data, dict):
        raise ValidationError({"share": "must be an object"})
    problems: dict[str, str] = {}
    unknown_fields(data, SHARE_FIELDS, problems)
    name = data.get("name")
    note(problems, "name", share_name_problem(name, taken_names))
    pool = storage_model.check_name(data.get("pool"), "pool", problems, "pool name")
    volume = storage_model.check_name(data.get("volume"), "volume", problems, "volume name")
    if volume in storage_model.RESERVED_VOLUMES:
        problems["volume"] = f"{volume!r} is reserved"
        volume = ""
    path = data.get("path")
    if pool and volume:
        root = volume_path(pools_root, pool, volume)
        path = root if path is None else path
        note(problems, "path", share_path_problem(path, pool, volume, root))
    description = "" if data.get("description") is None else data["description"]
    note(problems, "description", text_problem(description, DESCRIPTION_MAX))
    smb = check_smb(data.get("smb"), problems)
    nfs = check_nfs(data.get("nfs"), problems)
    if data.get("smb") is None and data.get("nfs") is None:
        problems["smb"] = "a share needs smb or nfs settings (or both)"
    permissions = check_permissions(data.get("permissions"), users, groups, problems)
    raise_problems(problems)
    return Share(name, pool, volume, posixpath.normpath(path), description, smb, nfs, permissions)
