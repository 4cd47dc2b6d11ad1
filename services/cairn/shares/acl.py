"""POSIX ACLs of share directories (pure: the ACL a share's permissions call for, and reading
`getfacl` output back), so that SMB and NFS (sec=sys, same uids on the server) enforce the same
access: the filesystem says what a user may do, whichever protocol the user comes through.

The ACL names every known file user by uid with that user's effective access
(model.effective_access, already resolved through groups: `none` in one group beats `rw` in
another, which POSIX group entries could not express): `rwX` for rw, `r-X` for ro, `---` for none.
The owner (root), the owning group and others get nothing beyond the owner's own `rwX`; the same
entries are set as the default ACL so new files and directories inherit them. `X` gives execute
only to directories and to files that were executable already.

Applied with `setfacl -R --set` over the whole share when the share directory's own ACL differs
from the wanted one (a change of permissions reaches files that exist already); the directory's
ACL is what is compared, so an unchanged share costs one `getfacl` per pass.
"""

from __future__ import annotations

from cairn.shares.model import Group, Share, User
from cairn.shares.model import access_by_user

GUEST_UID = 65534                  # nobody: Samba's guest account, NFS's squashed root
BITS = {"rw": "rwX", "ro": "r-X", "none": "---"}


def entries(share: Share, users: dict[str, User], groups: dict[str, Group]) -> list[str]:
    """The share directory's ACL entries, `X` not yet resolved (setfacl syntax)."""
    access = access_by_user(share, users, groups)
    named = {users[name].uid: BITS[level] for name, level in access.items()}
    if share.smb is not None and share.smb.guest_ok:
        named.setdefault(GUEST_UID, BITS["ro"])
    base = ["user::rwX"] + [f"user:{uid}:{named[uid]}" for uid in sorted(named)] + \
        ["group::---", "mask::rwX", "other::---"]
    return base + [f"default:{entry}" for entry in base]


def setfacl_spec(share: Share, users: dict[str, User], groups: dict[str, Group]) -> str:
    return ",".join(entries(share, users, groups))


def as_directory(wanted: list[str]) -> set[str]:
    """The entries as getfacl prints them for a directory (where X means x)."""
    return {entry.replace("X", "x") for entry in wanted}


def parse_getfacl(text: str) -> set[str]:
    """`getfacl -c -p -n` of one path: its entries, without the `#effective:` remarks."""
    found = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found.add(line)
    return found
