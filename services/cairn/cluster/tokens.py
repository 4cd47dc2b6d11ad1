"""One-time join tokens: how a new appliance proves it may join, and learns whom to trust.

A token is shown on a cluster node's console and pasted into the new appliance. It carries what
the new node needs before it trusts anything: the cluster's id and address (where to send the
request) and the SHA-256 fingerprint of the cluster CA (the new node checks the CA it is sent
against it, so a machine in the middle cannot pose as the cluster), plus a secret. The cluster
keeps only a hash of the secret, under `join-tokens/<id>`, with an expiry; a token is used once:
the join consumes it by a compare-and-swap that marks it used, so two joins racing with the same
token cannot both pass.

Format: "cairn-join-1." + base64url(JSON {"c": cluster id, "a": "host:port", "f": fingerprint,
"i": token id, "s": secret}). Parsing and the checks of a presented token are pure; `TokenStore`
holds the store side. Writer of `join-tokens/`: the web server of the node that issued a token
(issue) and of the node that serves the join (consume); records expire by an etcd lease.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from cairn.errors import AuthenticationError, Conflict, NotFound, ValidationError

PREFIX = "cairn-join-1."
DEFAULT_TTL = 3600              # seconds a token is valid unless the user asks otherwise
MAX_TTL = 7 * 24 * 3600
KEEP_USED = 24 * 3600           # a used token's record is kept this long, so a reuse says "used"
TOKEN_ID = re.compile(r"[0-9a-f]{16}")
CLUSTER_ID = re.compile(r"[0-9a-f]{16}")
FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
ADDRESS = re.compile(r"(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}")


@dataclass(frozen=True)
class JoinToken:
    cluster_id: str
    address: str            # host:port of a cluster node's console (the join request goes there)
    ca_fingerprint: str     # "sha256:<hex>" of the cluster CA certificate
    token_id: str
    secret: str

    def text(self) -> str:
        body = json.dumps({"c": self.cluster_id, "a": self.address, "f": self.ca_fingerprint,
                           "i": self.token_id, "s": self.secret}, separators=(",", ":"))
        return PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def new_token(cluster_id: str, address: str, ca_fingerprint: str) -> JoinToken:
    return JoinToken(cluster_id, address, ca_fingerprint, secrets.token_hex(8), secrets.token_urlsafe(24))


def parse(text: Any) -> JoinToken:
    """A pasted token; anything else is a ValidationError on the field "token" saying what is wrong."""
    def bad(problem: str) -> ValidationError:
        return ValidationError({"token": problem})
    if not isinstance(text, str) or not text.strip():
        raise bad("paste the join token shown on a cluster node's console")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise bad("not a Cairn join token (it starts with cairn-join-1.)")
    encoded = text[len(PREFIX):]
    try:
        body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except ValueError:
        raise bad("the join token is damaged (copy it again, whole)") from None
    if not isinstance(body, dict):
        raise bad("the join token is damaged (copy it again, whole)")
    token = JoinToken(*(body.get(k) for k in ("c", "a", "f", "i", "s")))
    checks = [(token.cluster_id, CLUSTER_ID), (token.address, ADDRESS), (token.ca_fingerprint, FINGERPRINT),
              (token.token_id, TOKEN_ID)]
    if any(not isinstance(value, str) or not pattern.fullmatch(value) for value, pattern in checks) \
            or not isinstance(token.secret, str) or not 16 <= len(token.secret) <= 128:
        raise bad("the join token is damaged (copy it again, whole)")
    return token


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def record(token: JoinToken, created_by: str, now: float, ttl: int) -> dict[str, Any]:
    """What the cluster keeps of a token: never the secret itself."""
    return {"id": token.token_id, "secret_sha256": secret_hash(token.secret), "created_by": created_by,
            "created_at": now, "expires_at": now + ttl, "used_by": None, "used_at": None}


def check_ttl(ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= MAX_TTL:
        raise ValidationError({"ttl": f"seconds from 60 to {MAX_TTL} (7 days)"})
    return ttl


def check_presented(kept: dict[str, Any] | None, token: JoinToken, cluster_id: str, now: float) -> None:
    """Whether a presented token may be used now. Raises: AuthenticationError (401) for a token of
    another cluster, an unknown or expired one, or a wrong secret; Conflict (409) for a used one."""
    if token.cluster_id != cluster_id:
        raise AuthenticationError("the join token is for another cluster")
    if kept is None:
        raise AuthenticationError("the join token is unknown here: it expired or was revoked; "
                                  "make a new one on a cluster node's console")
    if not hmac.compare_digest(kept.get("secret_sha256", ""), secret_hash(token.secret)):
        raise AuthenticationError("the join token's secret is wrong")
    if kept.get("used_by"):
        raise Conflict(f"the join token was already used (by {kept['used_by']}); make a new one")
    if now >= kept.get("expires_at", 0):
        raise AuthenticationError("the join token expired; make a new one on a cluster node's console")


class TokenStore:
    """join-tokens/<id> in the cluster store, each bound to a lease that ends it."""

    def __init__(self, store) -> None:
        self.store = store

    def issue(self, cluster_id: str, address: str, ca_fingerprint: str, created_by: str, now: float,
              ttl: int = DEFAULT_TTL) -> tuple[JoinToken, dict[str, Any]]:
        ttl = check_ttl(ttl)
        token = new_token(cluster_id, address, ca_fingerprint)
        kept = record(token, created_by, now, ttl)
        lease = self.store.grant_lease(ttl + KEEP_USED)
        self.store.put(f"join-tokens/{token.token_id}", kept, lease=lease)
        return token, kept

    def consume(self, token: JoinToken, cluster_id: str, joiner: str, now: float) -> dict[str, Any]:
        """Check the token and mark it used, atomically: of two joins with one token, one passes."""
        entry = self.store.get_entry(f"join-tokens/{token.token_id}")
        check_presented(entry.value if entry else None, token, cluster_id, now)
        used = dict(entry.value, used_by=joiner, used_at=now)
        if not self.store.cas(entry.key, used, entry.mod_revision, lease=entry.lease):
            raise Conflict("the join token was already used (a join at the same moment); make a new one")
        return used

    def list(self) -> list[dict[str, Any]]:
        return [entry.value for entry in self.store.list("join-tokens/")]

    def revoke(self, token_id: str) -> None:
        if not TOKEN_ID.fullmatch(token_id or ""):
            raise ValidationError({"id": "a join token id is 16 hex digits"})
        if not self.store.delete(f"join-tokens/{token_id}"):
            raise NotFound(f"no join token {token_id}")
