"""Console and API authentication: argon2 password hashes, bearer tokens, login rate limiting.

Keys (all written only by cairn-web processes, on any node):
    auth/users/<name>             {"name", "hash" (argon2id), "role", "created_at"}
    auth/session-secret           {"key"}: signs session cookies; made once, shared by every node
    auth/tokens/<sha256(token)>   {"user", "created_at", "expires_at"}; bound to a lease of TOKEN_TTL
    auth/login-failures/<client>  {"count", "first"}; bound to a lease of FAILURE_WINDOW

Rate limit: after MAX_FAILURES failed logins from one client address within FAILURE_WINDOW seconds,
further attempts get 429 until the window ends; a successful login clears the count.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cairn.cluster.store import Store
from cairn.errors import AuthenticationError, RateLimited, ValidationError

TOKEN_TTL = 12 * 3600
FAILURE_WINDOW = 300
MAX_FAILURES = 5
ADMIN = "admin"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _token_key(token: str) -> str:
    return "auth/tokens/" + hashlib.sha256(token.encode()).hexdigest()


def _failure_key(client: str) -> str:
    return "auth/login-failures/" + client.replace("/", "_")


class Auth:
    """`verify(hash, password)` checks a password (cairn-web passes one that runs argon2 off its
    event loop)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 verify: Callable[[str, str], bool] = check_password) -> None:
        self.store = store
        self.clock = clock
        self.verify = verify

    # --- set-up ------------------------------------------------------------------------------
    def session_secret(self) -> str:
        self.store.create("auth/session-secret", {"key": secrets.token_hex(32)})
        return self.store.get("auth/session-secret")["key"]

    def ensure_admin(self, password_file: Path) -> bool:
        """Create the admin user if there is none. Its password is the one in password_file, or a
        new random one written there (mode 0600). Returns True if the user was created now."""
        if self.store.get_entry(f"auth/users/{ADMIN}") is not None:
            return False
        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(12)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = password_file.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.write_text(password + "\n")
            tmp.replace(password_file)
        return self.store.create(f"auth/users/{ADMIN}", {
            "name": ADMIN, "hash": hash_password(password), "role": "admin", "created_at": self.clock()})

    # --- login -------------------------------------------------------------------------------
    def login(self, username: str, password: str, client: str) -> dict[str, Any]:
        """Check credentials; returns the user record. Raises RateLimited or AuthenticationError."""
        problems = {}
        if not isinstance(username, str) or not username:
            problems["username"] = "is required"
        if not isinstance(password, str) or not password:
            problems["password"] = "is required"
        if problems:
            raise ValidationError(problems)
        self._check_rate(client)
        user = self.store.get(f"auth/users/{username}")
        if user is None or not self.verify(user["hash"], password):
            self._record_failure(client)
            raise AuthenticationError("wrong user name or password")
        self.store.delete(_failure_key(client))
        return user

    def _check_rate(self, client: str) -> None:
        entry = self.store.get(_failure_key(client))
        if entry and entry["count"] >= MAX_FAILURES:
            retry = max(1, int(entry["first"] + FAILURE_WINDOW - self.clock()))
            raise RateLimited(f"too many failed logins from {client}; try again in {retry} s", retry)

    def _record_failure(self, client: str) -> None:
        key = _failure_key(client)
        for _ in range(10):
            entry = self.store.get_entry(key)
            if entry is None:
                lease = self.store.grant_lease(FAILURE_WINDOW)
                if self.store.create(key, {"count": 1, "first": self.clock()}, lease):
                    return
            else:
                value = dict(entry.value, count=entry.value["count"] + 1)
                if self.store.cas(key, value, entry.mod_revision, entry.lease):
                    return

    # --- tokens ------------------------------------------------------------------------------
    def issue_token(self, user: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        lease = self.store.grant_lease(TOKEN_TTL)
        self.store.put(_token_key(token), {"user": user, "created_at": now, "expires_at": now + TOKEN_TTL},
                       lease=lease)
        return {"token": token, "user": user, "expires_at": now + TOKEN_TTL}

    def user_for_token(self, token: str) -> str | None:
        record = self.store.get(_token_key(token))
        if record is None or record["expires_at"] < self.clock():
            return None
        return record["user"]

    def revoke_token(self, token: str) -> None:
        self.store.delete(_token_key(token))
