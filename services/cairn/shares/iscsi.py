"""iSCSI targets as desired state: data types and pure checks. No I/O here (no commands, no store,
no clock, no randomness: the serial of a new LUN comes from a function the caller passes in).

Store layout (under the cluster root; who writes what):

    iscsi-targets/<name>    Target record (below). Written by the API (iscsi_service.py); the agent of
                            the node that owns the target's pool applies it to LIO, the kernel target.
    iscsi-iqns/<iqn>        {"target": <name>}: claims the IQN in the transaction that creates the
                            target, so two targets never get one IQN. Written by the API.
    iscsi-trash/<serial>    {"pool", "file", "target"}: a LUN file to delete. Written by the API in the
                            transaction that removes the LUN (or its whole target); the pool's node
                            deletes the file, then the tombstone.
    iscsi-status/<name>     What the node last observed of the target (free-form). Written only by it.

A target record (the node side reads exactly this shape):

    {"name": "vmstore", "iqn": "iqn.2026-11.invalid.cairn:vmstore", "pool": "tank", "volume": "luns",
     "description": "",
     "luns": [{"lun": 0, "size": 10737418240, "serial": "<32 lowercase hex>",
               "file": "/pools/tank/luns/.iscsi/vmstore/lun0-<serial[:8]>.img"}],
     "initiators": ["iqn.1993-08.org.debian:01:abcdef"],
     "chap": null or {"user": "...", "password": "..."}}

Invariants kept by the checks below:

- Target names are 1-63 of [a-z0-9-], start with a letter or digit and do not end with '-'. The IQN
  defaults to IQN_PREFIX + name; a given one must be a valid iSCSI name (RFC 3720: lowercase,
  at most 223 bytes) in a form LIO takes for a target. Initiators are iSCSI names too (iqn., eui.,
  or naa. per RFC 3980); a target lists at least one and none twice.
- LUN numbers are 0-255 and unique in a target; a new LUN without a number gets the lowest free one.
- LUN sizes are whole MiB, from 1 MiB to 64 TiB, and only ever grow. LUN files are sparse (thin):
  no free-space check is made, so the LUNs of a pool may promise more than it holds; when the pool
  is full, writes to a LUN fail and its initiator sees I/O errors. Watch the pool's usage.
- A LUN's serial (uuid4 hex) is fixed at creation: initiators (and multipath) identify the disk by it.
  Its file lies in <volume>/.iscsi/<target>/ and is named from the LUN number and the serial's first
  8 hex digits, so a later LUN never reuses the path of one whose file is still to be deleted. An
  imported record must carry exactly that path: the node deletes whatever file a tombstone names.
- CHAP: a user of 1-64 printable ASCII characters without spaces and a password of 12-16 characters
  (the Windows initiator refuses other lengths). Neither may start with "NULL": LIO reads a value
  starting with "NULL" as "not set". The password is exported but never shown (public_view).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from cairn.errors import Conflict, ValidationError
from cairn.shares.model import DESCRIPTION_MAX, note, text_problem, unknown_fields, volume_path
from cairn.storage import model as storage_model
from cairn.storage.model import raise_problems

TARGET_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
IQN_PREFIX = "iqn.2026-11.invalid.cairn:"
NAME_MAX_BYTES = 223                       # RFC 3720 3.2.6.1
IQN = re.compile(r"iqn\.([0-9]{4})-([0-9]{2})\.([^:]*)(?::(.*))?", re.DOTALL)
DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
NAME_CHARS = re.compile(r"[^a-z0-9.:-]")
HEX = re.compile(r"[0-9a-f]+")
SERIAL = re.compile(r"[0-9a-f]{32}")
CHAP_USER = re.compile(r"[\x21-\x7e]{1,64}")
CHAP_PASSWORD_MIN, CHAP_PASSWORD_MAX = 12, 16
LIO_UNSET = "NULL"                         # LIO's configfs reads a value starting with it as unset

LUN_MAX = 255
MIB = 1 << 20
SIZE_MAX = 64 << 40                        # 64 TiB
LUN_DIR = ".iscsi"
NAME_HINT = ("an iSCSI name: iqn.YYYY-MM.reversed.domain[:identifier] (e.g. iqn.1993-08.org.debian:01:abcdef), "
             "eui. and 16 hex digits, or naa. and 16 or 32 hex digits")


@dataclass(frozen=True)
class Lun:
    lun: int                               # 0-255, unique in the target
    size: int                              # bytes, a multiple of 1 MiB
    serial: str                            # 32 lowercase hex digits, fixed at creation
    file: str                              # <volume>/.iscsi/<target>/lun<n>-<serial[:8]>.img


@dataclass(frozen=True)
class Chap:
    user: str
    password: str


@dataclass(frozen=True)
class Target:
    name: str
    iqn: str
    pool: str
    volume: str
    description: str = ""
    luns: tuple[Lun, ...] = ()
    initiators: tuple[str, ...] = ()
    chap: Chap | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Target":
        data = dict(data)
        data["luns"] = tuple(Lun(**lun) for lun in data.get("luns") or ())
        data["initiators"] = tuple(data.get("initiators") or ())
        data["chap"] = Chap(**data["chap"]) if data.get("chap") else None
        return cls(**data)


TARGET_FIELDS = tuple(Target.__dataclass_fields__)


# --- pure decisions ---------------------------------------------------------------------------
def default_iqn(name: str) -> str:
    return IQN_PREFIX + name


def lun_file(pools_root: str, pool: str, volume: str, target: str, lun: int, serial: str) -> str:
    return f"{volume_path(pools_root, pool, volume)}/{LUN_DIR}/{target}/lun{lun}-{serial[:8]}.img"


def lowest_free_lun(taken: Iterable[int]) -> int | None:
    used = set(taken)
    return next((number for number in range(LUN_MAX + 1) if number not in used), None)


def public_view(record: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A target record as the API and the console show it: the CHAP password replaced by
    password_set, the node's observation under status."""
    view = {key: value for key, value in record.items() if key != "chap"}
    chap = record.get("chap")
    view["chap"] = {"user": chap["user"], "password_set": bool(chap.get("password"))} if chap else None
    view["status"] = status
    return view


def size_text(size: int) -> str:
    """Bytes in words for messages: '10 GiB (10737418240 bytes)'."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", MIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit} ({size} bytes)"
    return f"{size} bytes"


# --- validation (pure) ------------------------------------------------------------------------
def target_name_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not TARGET_NAME.fullmatch(value):
        return ("target name must be 1-63 of a-z, 0-9 and '-', starting with a letter or digit "
                "and not ending with '-'")
    return None


def iscsi_name_problem(value: Any, for_target: bool = False) -> str | None:
    """Why `value` is not an iSCSI name (RFC 3720, RFC 3980), or None. A target's own name must
    also be one LIO (through rtslib) accepts: its naa. names are 16 hex digits starting 1, 2 or 5."""
    if not isinstance(value, str) or not value:
        return f"must be {NAME_HINT}"
    if value != value.lower():
        problem = iscsi_name_problem(value.lower(), for_target)
        return (f"iSCSI names are lowercase: did you mean {value.lower()}?" if problem is None
                else f"{problem}; iSCSI names are lowercase, too")
    if len(value.encode()) > NAME_MAX_BYTES:
        return f"must be at most {NAME_MAX_BYTES} bytes (RFC 3720), not {len(value.encode())}"
    if value.startswith(("eui.", "naa.")):
        kind, digits = value[:3], value[4:]
        lengths = (16,) if kind == "eui" else (16, 32)
        if not HEX.fullmatch(digits) or len(digits) not in lengths:
            counts = "16" if kind == "eui" else "16 or 32"
            return f"{kind}. must be followed by {counts} hex digits (0-9, a-f), not {digits!r}"
        if for_target and kind == "naa" and (len(digits) != 16 or digits[0] not in "125"):
            return ("as a target name, naa. must be followed by 16 hex digits starting with 1, 2 or 5 "
                    "(LIO takes no other)")
        return None
    if not value.startswith("iqn."):
        return f"must be {NAME_HINT}"
    bad = sorted(set(NAME_CHARS.findall(value)))
    if bad:
        shown = ", ".join(repr(char) for char in bad)
        return f"may contain only a-z, 0-9, '-', '.' and ':' (found {shown})"
    match = IQN.fullmatch(value)
    if not match or not 1 <= int(match.group(2)) <= 12:
        return ("after 'iqn.' comes a date, YYYY-MM (a month 01-12), and a '.', then a reversed domain "
                "name like com.example")
    labels = match.group(3).split(".")
    if len(labels) < 2 or not all(DOMAIN_LABEL.fullmatch(label) for label in labels):
        return (f"{match.group(3)!r} is not a reversed domain name: after iqn.YYYY-MM. give one like "
                "com.example (two or more labels), then optionally ':' and an identifier")
    if match.group(4) is not None and not match.group(4):
        return "nothing follows the ':'; give an identifier after it or leave the ':' out"
    return None


def check_size(value: Any, field_name: str, problems: dict[str, str]) -> int:
    """A LUN size: a whole number of bytes or a text like "10G" or "512M" (binary units)."""
    hint = "must be a whole number of bytes or a size like 512M, 10G or 2T (binary units)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        problems[field_name] = hint
        return 0
    if isinstance(value, str):
        try:
            value = storage_model.parse_size(value)
        except ValueError:
            problems[field_name] = f"{hint}, not {value!r}"
            return 0
    if value < MIB:
        problems[field_name] = f"must be at least 1 MiB ({MIB} bytes), not {value}"
    elif value > SIZE_MAX:
        problems[field_name] = f"must be at most 64 TiB ({SIZE_MAX} bytes), not {value}"
    elif value % MIB:
        rounded = (value // MIB + 1) * MIB
        problems[field_name] = (f"must be a whole number of MiB ({MIB} bytes): {value} is not; "
                                f"{size_text(rounded)} would be")
    else:
        return value
    return 0


def check_lun_number(value: Any, field_name: str, problems: dict[str, str]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LUN_MAX:
        problems[field_name] = f"LUN number must be a whole number from 0 to {LUN_MAX}"
        return None
    return value


def check_initiators(value: Any, problems: dict[str, str]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        problems["initiators"] = ("at least one initiator is needed: the iSCSI name of each computer "
                                  "that may connect (Linux: /etc/iscsi/initiatorname.iscsi; Windows: the "
                                  "iSCSI Initiator's Configuration tab)")
        return ()
    seen: dict[str, int] = {}
    for index, initiator in enumerate(value):
        key = f"initiators[{index}]"
        problem = iscsi_name_problem(initiator)
        if problem:
            problems[key] = problem
        elif initiator in seen:
            problems[key] = f"{initiator} is listed twice (also initiators[{seen[initiator]}])"
        else:
            seen[initiator] = index
    return tuple(seen)


def chap_password_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be {CHAP_PASSWORD_MIN} to {CHAP_PASSWORD_MAX} characters"
    odd = next((char for char in value if not " " <= char <= "~"), None)
    if odd is not None:
        return f"must be printable ASCII characters (found U+{ord(odd):04X})"
    if not CHAP_PASSWORD_MIN <= len(value) <= CHAP_PASSWORD_MAX:
        return (f"must be {CHAP_PASSWORD_MIN} to {CHAP_PASSWORD_MAX} characters, not {len(value)} "
                "(the Windows iSCSI initiator refuses CHAP secrets of any other length)")
    if value.startswith(LIO_UNSET):
        return f"must not start with {LIO_UNSET!r} (LIO would read it as 'no password')"
    return None


def check_chap(value: Any, problems: dict[str, str], current: Chap | None = None) -> Chap | None:
    """CHAP settings or None. Without a password, `current`'s is kept (it is never shown back, so
    a client changing only the user cannot send it)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problems["chap"] = "must be an object {user, password} or null (no CHAP)"
        return None
    before = len(problems)
    unknown_fields(value, Chap.__dataclass_fields__, problems, "chap.")
    user = value.get("user")
    if not isinstance(user, str) or not CHAP_USER.fullmatch(user):
        problems["chap.user"] = "must be 1-64 printable ASCII characters without spaces"
    elif user.startswith(LIO_UNSET):
        problems["chap.user"] = f"must not start with {LIO_UNSET!r} (LIO would read it as 'no user')"
    password = value.get("password")
    if password is None and current is not None:
        password = current.password
    note(problems, "chap.password", chap_password_problem(password))
    return Chap(user, password) if len(problems) == before else None


def check_lun_specs(value: Any, problems: dict[str, str]) -> list[tuple[int, int]]:
    """The LUNs of a new target ({size[, lun]} each) → [(number, size)], numbers allocated."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        problems["luns"] = "must be a list of {size[, lun]}"
        return []
    if len(value) > LUN_MAX + 1:
        problems["luns"] = f"a target has at most {LUN_MAX + 1} LUNs (numbers 0-{LUN_MAX}), not {len(value)}"
        return []
    wanted: list[tuple[int | None, int]] = []
    seen: dict[int, int] = {}
    for index, entry in enumerate(value):
        prefix = f"luns[{index}]"
        if not isinstance(entry, dict):
            problems[prefix] = "must be an object {size[, lun]}"
            continue
        for key in sorted(set(map(str, entry)) - {"size", "lun"}):
            problems[f"{prefix}.{key}"] = ("is set by Cairn when the LUN is made" if key in ("serial", "file")
                                           else "unknown setting")
        size = check_size(entry.get("size"), f"{prefix}.size", problems)
        number = None
        if entry.get("lun") is not None:
            number = check_lun_number(entry["lun"], f"{prefix}.lun", problems)
            if number is not None and number in seen:
                problems[f"{prefix}.lun"] = f"LUN {number} is listed twice (also luns[{seen[number]}])"
            elif number is not None:
                seen[number] = index
        wanted.append((number, size))
    taken = set(seen)
    numbered = []
    for number, size in wanted:
        if number is None:
            number = lowest_free_lun(taken)
            taken.add(number)
        numbered.append((number, size))
    return numbered


def check_lun_records(value: Any, problems: dict[str, str], pools_root: str, pool: str, volume: str,
                      name: str) -> tuple[Lun, ...]:
    """The LUNs of a whole record (an import): every field given, the file where it belongs."""
    if not isinstance(value, (list, tuple)):
        problems["luns"] = "must be a list of {lun, size, serial, file}"
        return ()
    luns: list[Lun] = []
    numbers: dict[int, int] = {}
    serials: dict[str, int] = {}
    for index, entry in enumerate(value):
        prefix = f"luns[{index}]"
        if not isinstance(entry, dict):
            problems[prefix] = "must be an object {lun, size, serial, file}"
            continue
        before = len(problems)
        unknown_fields(entry, Lun.__dataclass_fields__, problems, f"{prefix}.")
        number = check_lun_number(entry.get("lun"), f"{prefix}.lun", problems)
        if number is not None and number in numbers:
            problems[f"{prefix}.lun"] = f"LUN {number} is listed twice (also luns[{numbers[number]}])"
        elif number is not None:
            numbers[number] = index
        size = check_size(entry.get("size"), f"{prefix}.size", problems)
        serial = entry.get("serial")
        if not isinstance(serial, str) or not SERIAL.fullmatch(serial):
            problems[f"{prefix}.serial"] = "must be 32 lowercase hex digits"
        elif serial in serials:
            problems[f"{prefix}.serial"] = f"is the serial of luns[{serials[serial]}] too"
        else:
            serials[serial] = index
        if len(problems) == before and pool and volume and name:
            expected = lun_file(pools_root, pool, volume, name, number, serial)
            if entry.get("file") != expected:
                problems[f"{prefix}.file"] = f"must be {expected} (where the LUN's file lives)"
        if len(problems) == before:
            luns.append(Lun(number, size, serial, entry["file"]))
    return tuple(sorted(luns, key=lambda lun: lun.lun))


def check_target(data: Any, pools_root: str = "/pools", new_serial: Callable[[], str] | None = None,
                 whole_record: bool = False) -> Target:
    """A target from API input ({size[, lun]} per LUN, serials drawn from `new_serial`), or with
    `whole_record` an exported record (LUNs with their serials and files, the CHAP password).
    Every problem at once (ValidationError, keyed by field path). Whether the name, the IQN or a
    serial is taken is the service's question (it knows the other targets)."""
    if not isinstance(data, dict):
        raise ValidationError({"target": "must be an object"})
    problems: dict[str, str] = {}
    unknown_fields(data, TARGET_FIELDS, problems)
    name = data.get("name")
    note(problems, "name", target_name_problem(name))
    iqn = data.get("iqn")
    if iqn is None or (iqn == "" and not whole_record):
        iqn = default_iqn(name) if isinstance(name, str) else ""
    else:
        note(problems, "iqn", iscsi_name_problem(iqn, for_target=True))
    pool = storage_model.check_name(data.get("pool"), "pool", problems, "pool name")
    volume = storage_model.check_name(data.get("volume"), "volume", problems, "volume name")
    if volume in storage_model.RESERVED_VOLUMES:
        problems["volume"] = f"{volume!r} is reserved"
        volume = ""
    description = "" if data.get("description") is None else data["description"]
    note(problems, "description", text_problem(description, DESCRIPTION_MAX))
    initiators = check_initiators(data.get("initiators"), problems)
    chap = check_chap(data.get("chap"), problems)
    place_known = not {"name", "pool", "volume"} & set(problems)
    if whole_record:
        luns = check_lun_records(data.get("luns", []), problems, pools_root, pool, volume,
                                 name if place_known else "")
    else:
        specs = check_lun_specs(data.get("luns"), problems)
        luns = ()
        if not problems:
            if specs and new_serial is None:
                raise TypeError("check_target needs new_serial to make LUNs")
            luns = tuple(sorted((new_lun(pools_root, pool, volume, name, number, size, new_serial())
                                 for number, size in specs), key=lambda lun: lun.lun))
    raise_problems(problems)
    return Target(name, iqn, pool, volume, description, luns, initiators, chap)


def new_lun(pools_root: str, pool: str, volume: str, target: str, number: int, size: int, serial: str) -> Lun:
    return Lun(number, size, serial, lun_file(pools_root, pool, volume, target, number, serial))


FIXED = {"name": "a target keeps its name (make a new target to rename)",
         "iqn": "a target keeps its IQN: initiators know it by it (make a new target for another IQN)",
         "pool": "a target's LUN files stay in their volume (make a new target elsewhere)",
         "volume": "a target's LUN files stay in their volume (make a new target elsewhere)",
         "luns": "LUNs are added, grown and deleted under /iscsi-targets/<name>/luns"}
CHANGEABLE = ("description", "initiators", "chap")


def check_changes(target: Target, body: Any) -> Target:
    """`target` with a PATCH applied: description, initiators and chap (null removes CHAP; without
    a password the current one stays). Fixed fields given with another value are refused, saying so."""
    if not isinstance(body, dict):
        raise ValidationError({"target": "must be an object"})
    problems: dict[str, str] = {}
    current = target.to_dict()
    for key in sorted(set(map(str, body)) - set(CHANGEABLE)):
        if key not in FIXED:
            problems[key] = "unknown setting"
        elif key == "luns" or body[key] != current[key]:
            problems[key] = f"cannot be changed: {FIXED[key]}"
    description = body.get("description", target.description)
    description = "" if description is None else description
    note(problems, "description", text_problem(description, DESCRIPTION_MAX))
    initiators = (check_initiators(body["initiators"], problems) if "initiators" in body
                  else target.initiators)
    chap = check_chap(body["chap"], problems, target.chap) if "chap" in body else target.chap
    raise_problems(problems)
    return Target(target.name, target.iqn, target.pool, target.volume, description, target.luns,
                  initiators, chap)


def check_new_lun(target: Target, body: Any, pools_root: str, new_serial: Callable[[], str]) -> Lun:
    """A LUN to add to `target`: {size[, lun]}. A number that is taken, or no number left, is a
    Conflict (409), raised after the input's own problems (400)."""
    if not isinstance(body, dict):
        raise ValidationError({"lun": "must be an object {size[, lun]}"})
    problems: dict[str, str] = {}
    for key in sorted(set(map(str, body)) - {"size", "lun"}):
        problems[key] = "is set by Cairn when the LUN is made" if key in ("serial", "file") else "unknown setting"
    size = check_size(body.get("size"), "size", problems)
    number = check_lun_number(body["lun"], "lun", problems) if body.get("lun") is not None else None
    raise_problems(problems)
    taken = {lun.lun for lun in target.luns}
    if number is None:
        number = lowest_free_lun(taken)
        if number is None:
            raise Conflict(f"target {target.name} has {LUN_MAX + 1} LUNs, every number from 0 to {LUN_MAX}",
                           target=target.name)
    elif number in taken:
        raise Conflict(f"target {target.name} has a LUN {number} already; leave the number out to get "
                       f"the lowest free one", target=target.name, lun=number)
    return new_lun(pools_root, target.pool, target.volume, target.name, number, size, new_serial())


def check_grow(lun: Lun, body: Any) -> Lun:
    """`lun` with a new size: the same or larger (shrinking would cut off the data at the end)."""
    if not isinstance(body, dict):
        raise ValidationError({"lun": "must be an object {size}"})
    problems: dict[str, str] = {}
    for key in sorted(set(map(str, body)) - {"size"}):
        problems[key] = "cannot be changed: only a LUN's size can" if key in Lun.__dataclass_fields__ \
            else "unknown setting"
    size = check_size(body.get("size"), "size", problems)
    if size and size < lun.size:
        problems["size"] = (f"{size_text(size)} is smaller than LUN {lun.lun} ({size_text(lun.size)}): "
                            "would cut off data; shrinking is not supported")
    raise_problems(problems)
    return Lun(lun.lun, size, lun.serial, lun.file)
