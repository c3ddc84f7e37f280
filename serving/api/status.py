"""The one place where errors become gRPC status codes and HTTP statuses (the tree: serving/errors.py).

HTTP follows Triton's HTTP server (HttpCodeFromError): not found 404, unavailable 503, internal 500, and
400 for invalid input, cancellation and what has no closer code. Triton reports a full queue and an
expired queue timeout as UNAVAILABLE, so they are 503 here too (not 429): clients that retry on 503 for
Triton behave the same against us.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from serving import errors

log = logging.getLogger("serving.api")

CODES: dict[type[errors.ServingError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ModelConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelExecutionError: grpc.StatusCode.INTERNAL,
}


HTTP_STATUS: dict[type[errors.ServingError], int] = {
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.FailedPrecondition: 400,
    errors.InvalidInput: 400,
    errors.QueueFull: 503,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 503,
    errors.Cancelled: 400,
    errors.Unauthenticated: 401,
    errors.ModelConfigError: 400,
    errors.ModelExecutionError: 500,
}


def http_status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def message_of(exc: BaseException) -> str:
    if isinstance(exc, errors.ServingError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def grpc_errors(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn a ServingError raised by an RPC handler into its status code and message."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await handler(self, request, context)
        except errors.ServingError as exc:
            await context.abort(status_of(exc), message_of(exc))
        except Exception as exc:
            log.exception("unexpected error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, message_of(exc))
        raise AssertionError("context.abort returned")  # pragma: no cover

    return wrapper
