"""smb.conf from share records (pure: plain data in, file contents out; the agent writes the file
atomically, only when it changed, and reloads smbd then).

The same input always gives the same bytes: shares sorted by name, options in a fixed order,
user lists sorted. Shares without SMB settings are left out.

Choices, and why:

Global section
- `server role = standalone server`, `security = user`, `passdb backend = tdbsam`: Cairn keeps
  its own file-access users (smbpasswd entries made by the backend); no domain membership yet.
- `server min protocol = SMB2_10`: SMB1 is insecure and slow; every supported client speaks SMB2.1.
- `map to guest = never`, `restrict anonymous = 2`, `guest account = nobody`: a wrong password is an
  error, never a silent guest login; anonymous sessions see nothing; guests (only on shares that
  say `guest_ok`) are the unprivileged `nobody`.
- `load printers = no`, `printing = bsd`, `printcap name = /dev/null`, `disable spoolss = yes`:
  a NAS does not serve printers; this keeps smbd from looking for CUPS and the spooler.
- `log level = 1`: errors and important events only; raise it by hand while debugging.
- `vfs objects` only per share, built from that share's options (below).

Per share
- `path` is the validated, normalised path; `comment` the description (left out when empty).
- Access is computed per user, never by passing groups through as `@group`: Samba's own rules do
  not match Cairn's (`invalid users` beats every grant, so a user denied through a group could
  never be let in by an entry of their own; `write list` beats `read list`, so an explicit `ro`
  for a member of an `rw` group would not hold). So for every known user `effective_access()`
  decides (disabled users and memberships in unknown groups count as nothing), and the share gets
  `valid users` (ro + rw), `invalid users` (none), and, unless the share is read-only,
  `read list` (ro) and `write list` (rw). Membership changes therefore change smb.conf; the agent
  reloads smbd, which is cheap. A share nobody may use gets `available = no`, because an empty
  `valid users` would let everyone in.
- `guest_ok`: `guest ok = yes` and the guest account in `valid users` and `read list`: guests
  may read, never write. Note that `restrict anonymous = 2` and Windows' default refusal of
  insecure guest logons both work against guests; that is deliberate.
- `read_only`: `read only = yes` and no `write list` (a write list would override it).
- `create mask = 0660`, `force create mode = 0660`, `directory mask = 0770`,
  `force directory mode = 0770`: files are not executable and nothing is open to "other" (NFS
  clients with any uid would be "other"); owner and group bits are forced to rw because with POSIX ACLs the
  group bits are the ACL mask, and a narrower mask would silently cut the grants of named users.
- `inherit acls = yes`: new files take the default ACL of their directory, which is where the
  backend puts the share's grants (the same ACLs serve NFS).
- No `acl_xattr`: it keeps a separate NT ACL in an xattr that NFS never sees and that drifts from
  the POSIX ACLs Cairn manages; one source of truth is the POSIX ACL.
- `recycle` (recycle_bin): deleted files move to `.recycle/<user>` in the share, keeping their
  directory tree and older versions, with the access time set to the deletion time.
- `shadow_copy2` (previous_versions): the volume's snapshots are read-only subvolumes at
  `<pools_root>/<pool>/.snapshots/<volume>/<name>`, each a copy of the whole volume. So
  `shadow:snapdir` is that absolute directory, and `shadow:mountpoint` and `shadow:basedir` are the
  volume root: a share on a subdirectory of the volume then finds its files at
  `<snapshot>/<subdirectory>/...` (shadow_copy2 appends the share path relative to basedir).
  Setting the mount point spares shadow_copy2 its st_dev walk, whose answer on btrfs depends on
  subvolume boundaries. Only scheduled snapshots match `shadow:format` (`auto-%Y%m%dT%H%M%SZ`,
  UTC: `shadow:localtime = no`); newest first (`shadow:sort = desc`). btrfs snapshots have their
  own st_dev, so `shadow:fixinodes` is not needed. `shadow_copy2` is stacked above `recycle` so
  that a delete inside a previous version fails as read-only instead of being "recycled".

Escaping: smb.conf has none worth the name. The parser merges runs of spaces, trims values,
continues lines ending in '\\', and Samba substitutes %-variables in names, paths and comments,
with no escape for '%' (writing '%%' would leave two percent signs). Validation (model.py)
refuses texts that would change; `render` checks again and raises ValueError rather than write
a config that means something else. Option values Cairn writes itself (`%U` in the recycle
repository, the strftime format of shadow_copy2, which is not substituted) are written as is.
A comment that starts and ends with '"' loses those quotes (Samba strips them from string
values); that is cosmetic and left alone.
"""

from __future__ import annotations

import posixpath
import re
from typing import Iterable

from cairn.shares.model import (Group, Share, User, access_by_user, share_key, share_name_problem,
                                smb_text_problem, volume_path)
from cairn.storage.model import AUTO_PREFIX, STAMP, snapshot_dir

HEADER = "# generated by Cairn, do not edit: cairn-agent rewrites this file from the share records"
NETBIOS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,14}")
WORKGROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
SNAPSHOT_FORMAT = re.compile(r"[A-Za-z0-9%._-]+")   # a directory name: shadow_copy2 refuses '/'

GUEST_ACCOUNT = "nobody"
DEFAULT_SNAPSHOT_FORMAT = AUTO_PREFIX + STAMP


def render(shares: Iterable[Share], users: dict[str, User], groups: dict[str, Group], *,
           netbios_name: str, workgroup: str = "WORKGROUP",
           snapshot_format: str = DEFAULT_SNAPSHOT_FORMAT, pools_root: str = "/pools",
           include: str = "") -> str:
    """The whole smb.conf for these shares (only those with SMB settings). `include` names a
    file of site settings read at the end of [global] (tests put their ports and dirs there)."""
    if not NETBIOS_NAME.fullmatch(netbios_name):
        raise ValueError(f"netbios name {netbios_name!r}: 1-15 letters, digits and '-'")
    if not WORKGROUP.fullmatch(workgroup):
        raise ValueError(f"workgroup {workgroup!r}: 1-15 letters, digits, '.', '_' and '-'")
    if netbios_name.upper() == workgroup.upper():
        raise ValueError("netbios name and workgroup must differ")
    if not SNAPSHOT_FORMAT.fullmatch(snapshot_format):
        raise ValueError(f"snapshot format {snapshot_format!r}: letters, digits, '%', '.', '_' and '-'")
    smb_shares = sorted((share for share in shares if share.smb is not None), key=lambda s: s.name)
    seen: dict[str, str] = {}
    for share in smb_shares:
        other = seen.setdefault(share_key(share.name), share.name)
        if other != share.name:
            raise ValueError(f"shares {other!r} and {share.name!r} differ only in case")
    if include and (not include.startswith("/") or smb_text_problem(include)):
        raise ValueError(f"include {include!r}: must be an absolute path smb.conf can hold")
    options = global_options(netbios_name, workgroup) + ([("include", include)] if include else [])
    sections = [section("global", options)]
    for share in smb_shares:
        sections.append(section(share.name, share_options(share, users, groups, snapshot_format,
                                                          pools_root)))
    return HEADER + "\n\n" + "\n\n".join(sections) + "\n"


def global_options(netbios_name: str, workgroup: str) -> list[tuple[str, str]]:
    return [
        ("server role", "standalone server"),
        ("security", "user"),
        ("passdb backend", "tdbsam"),
        ("netbios name", netbios_name),
        ("workgroup", workgroup),
        ("server min protocol", "SMB2_10"),
        ("map to guest", "never"),
        ("restrict anonymous", "2"),
        ("guest account", GUEST_ACCOUNT),
        ("load printers", "no"),
        ("printing", "bsd"),
        ("printcap name", "/dev/null"),
        ("disable spoolss", "yes"),
        ("log level", "1"),
    ]


def netbios_name_for(node: str) -> str:
    """A node name as a NetBIOS name: upper case, other characters as '-', at most 15."""
    name = re.sub(r"[^A-Z0-9-]", "-", node.upper())[:15].strip("-")
    return name if NETBIOS_NAME.fullmatch(name) else "CAIRN"


def section(name: str, options: list[tuple[str, str]]) -> str:
    return "\n".join([f"[{name}]"] + [f"\t{key} = {value}" for key, value in options])


def text(value: str, what: str) -> str:
    """A name, path or comment as smb.conf will read it back, or ValueError."""
    problem = smb_text_problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} {problem}")
    return value


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def share_options(share: Share, users: dict[str, User], groups: dict[str, Group],
                  snapshot_format: str = DEFAULT_SNAPSHOT_FORMAT,
                  pools_root: str = "/pools") -> list[tuple[str, str]]:
    assert share.smb is not None
    smb = share.smb
    problem = share_name_problem(share.name)
    if problem:
        raise ValueError(f"share name {share.name!r} {problem}")
    root = volume_path(pools_root, share.pool, share.volume)
    path = posixpath.normpath(share.path)
    if path != root and not path.startswith(root + "/"):
        raise ValueError(f"share {share.name!r}: {share.path} is outside {root}")
    options = [("path", text(path, "path"))]
    if share.description:
        options.append(("comment", text(share.description, "description")))
    options += [("browseable", yes_no(smb.browseable)),
                ("read only", yes_no(smb.read_only)),
                ("guest ok", yes_no(smb.guest_ok))]

    access = access_by_user(share, users, groups)
    readers = [name for name, level in access.items() if level == "ro"]
    writers = [name for name, level in access.items() if level == "rw"]
    denied = [name for name, level in access.items() if level == "none"]
    guests = [GUEST_ACCOUNT] if smb.guest_ok else []
    valid = sorted(readers + writers) + guests
    if not valid:
        options.append(("available", "no"))      # an empty "valid users" would mean everyone
    else:
        options.append(("valid users", " ".join(valid)))
    if denied:
        options.append(("invalid users", " ".join(denied)))
    if not smb.read_only:
        if readers or guests:
            options.append(("read list", " ".join(readers + guests)))
        if writers:
            options.append(("write list", " ".join(writers)))

    options += [("create mask", "0660"),
                ("force create mode", "0660"),
                ("directory mask", "0770"),
                ("force directory mode", "0770"),
                ("inherit acls", "yes")]

    # shadow_copy2 above recycle: deleting inside a previous version fails as read-only.
    modules = [name for name, wanted in (("shadow_copy2", smb.previous_versions),
                                         ("recycle", smb.recycle_bin)) if wanted]
    if modules:
        options.append(("vfs objects", " ".join(modules)))
    if smb.recycle_bin:
        options += [("recycle:repository", ".recycle/%U"),
                    ("recycle:keeptree", "yes"),
                    ("recycle:versions", "yes"),
                    ("recycle:touch", "yes")]
    if smb.previous_versions:
        options += [("shadow:mountpoint", text(root, "volume path")),
                    ("shadow:basedir", root),
                    ("shadow:snapdir", text(snapshot_dir(posixpath.normpath(pools_root), share.pool,
                                                         share.volume), "snapshot directory")),
                    ("shadow:format", snapshot_format),
                    ("shadow:localtime", "no"),
                    ("shadow:sort", "desc")]
    return options
