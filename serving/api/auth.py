"""Who may change what the server serves: the admin calls, guarded on gRPC and HTTP alike.

Protected: every method of serving.admin.ModelAdmin, and KServe's RepositoryModelLoad and
RepositoryModelUnload (gRPC and their HTTP routes): they change what the server serves. Inference,
metadata, health and the repository index are never guarded.

- With a token (`--admin-token-file`): a call must carry `authorization: Bearer <token>`, compared in
  constant time (hmac.compare_digest), from any address.
- Without one (the default): only loopback peers (127.0.0.0/8, ::1, a unix socket) are served; any
  other peer is refused, with a message saying that a token is required to administer from there.

A refusal is UNAUTHENTICATED (errors.Unauthenticated; HTTP 401, serving/api/status.py) before the
handler runs, so a refused call changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.errors import Unauthenticated
from serving.quoting import clip

ADMIN_SERVICE_PREFIX = "/serving.admin.ModelAdmin/"
PROTECTED_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }
)
AUTHORIZATION = "authorization"
BEARER = "bearer "


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace removed); ValueError naming the file if unusable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"admin_token_file: cannot read {path}: {exc}") from None
    if not token:
        raise ValueError(f"admin_token_file: {path} is empty")
    if any(c.isspace() for c in token):
        raise ValueError(f"admin_token_file: the token in {path} contains whitespace")
    return token


def is_protected(method: str) -> bool:
    return method.startswith(ADMIN_SERVICE_PREFIX) or method in PROTECTED_METHODS


def bearer_token(metadata: Any) -> str:
    """The token of an `authorization: Bearer <token>` entry of the call's metadata, or ""."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION:
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text[: len(BEARER)].lower() == BEARER:
                return text[len(BEARER) :].strip()
    return ""


def is_loopback_address(host: str | None) -> bool:
    """True for a loopback IP (127.0.0.0/8, ::1, and IPv4-mapped ::ffff:127.x); False otherwise."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_loopback_peer(peer: str) -> bool:
    """A gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:/path") from this machine."""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind == "ipv4":
        return is_loopback_address(rest.rpartition(":")[0])
    if kind == "ipv6":
        host = rest.rpartition("]")[0].lstrip("[") if rest.startswith("[") else rest.rpartition(":")[0]
        return is_loopback_address(host)
    return False


class AdminGuard:
    """The one decision: may this call administer the server? Raises Unauthenticated if not."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    def check_token(self, what: str, presented: str) -> None:
        if self._token is None:
            return
        given = presented.encode()
        if given and hmac.compare_digest(given, self._token):
            return
        reason = "wrong admin token" if given else "missing admin token (authorization: Bearer <token>)"
        raise Unauthenticated(f"{clip(what)}: {reason}")

    def check_peer(self, what: str, peer: str, loopback: bool) -> None:
        """Without a token, only loopback peers administer (with one, check_token decides)."""
        if self._token is None and not loopback:
            raise Unauthenticated(
                f"{clip(what)}: refused for {clip(peer)}: without an admin token the admin API is served "
                "only to loopback clients; start the server with --admin-token-file to administer it "
                "from other addresses"
            )

    def check_call(self, method: str, metadata: Any, peer: Callable[[], str | None]) -> None:
        """A protected gRPC call: the token in its metadata; without a token, its peer (`peer()`)."""
        if self._token is not None:
            self.check_token(method, bearer_token(metadata))
            return
        address = peer() or ""
        self.check_peer(method, address, is_loopback_peer(address))

    def check_http(self, path: str, remote: str | None, headers: Any) -> None:
        """An HTTP repository call: `remote` is aiohttp's request.remote, `headers` its items()."""
        self.check_peer(path, remote or "unknown peer", is_loopback_address(remote))
        self.check_token(path, bearer_token(headers))
