"""Writing generated files: atomically (a reader sees the old or the new content, never half),
and only when the content changed (so "changed" can decide whether a daemon is reloaded)."""

from __future__ import annotations

import os
from pathlib import Path


def write_if_changed(path: str | Path, text: str, mode: int | None = None) -> bool:
    """Atomic write, only when the content differs. Returns whether it wrote."""
    target = Path(path)
    if target.exists() and target.read_text() == text:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".cairn-tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, target)
    return True


def write_private(path: str | Path, data: bytes) -> None:
    """Atomic write of a secret (a private key): the file is mode 0600 from its first byte."""
    target = Path(path)
    tmp = target.with_name(target.name + ".cairn-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, target)


def read_text(path: str | Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def parse_assignments(text: str) -> dict[str, str]:
    """NAME=value lines, as /etc/os-release and systemd's EnvironmentFile= hold them: blank lines and
    # comments skipped, white space around each part and double quotes around a value dropped (pure)."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() and not name.startswith("#"):
            values[name.strip()] = value.strip().strip('"')
    return values
