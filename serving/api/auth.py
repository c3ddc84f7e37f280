"""Bearer-token protection of the admin calls (`--admin-token-file`); inference calls never need it.

Protected: every method of serving.admin.ModelAdmin, and KServe's RepositoryModelLoad and
RepositoryModelUnload (they change what the server serves). A call must carry the metadata
`authorization: Bearer <token>`; the token is compared in constant time. Anything else is refused
with UNAUTHENTICATED (errors.Unauthenticated, mapped in serving/api/status.py) before the handler runs.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from serving.api.status import message_of, status_of
from serving.errors import Unauthenticated

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


class AdminTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if not is_protected(method):
            return await continuation(handler_call_details)
        presented = bearer_token(handler_call_details.invocation_metadata).encode()
        if presented and hmac.compare_digest(presented, self._token):
            return await continuation(handler_call_details)
        reason = "wrong admin token" if presented else "missing admin token (authorization: Bearer <token>)"
        return _refusal(Unauthenticated(f"{method}: {reason}"))


def _refusal(error: Unauthenticated) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(status_of(error), message_of(error))

    return grpc.unary_unary_rpc_method_handler(refuse)
