"""One exception tree for the whole server; serving/api/status.py maps it to gRPC codes in one place.

    ServingError
    ├── NotFound              unknown model or version                     → NOT_FOUND
    ├── AlreadyExists         a shared-memory region name already in use   → ALREADY_EXISTS
    ├── InvalidInput          wrong name, shape, dtype, byte count, batch  → INVALID_ARGUMENT
    ├── QueueFull             a batcher's queue is at max_queue_size       → RESOURCE_EXHAUSTED
    ├── Unavailable           not ready, draining, shutting down           → UNAVAILABLE
    ├── DeadlineExceeded      gRPC deadline or queue timeout passed        → DEADLINE_EXCEEDED
    ├── Cancelled             the caller went away                         → CANCELLED
    ├── Unauthenticated       missing or wrong admin token                 → UNAUTHENTICATED
    ├── ModelConfigError      a config.pbtxt or model file is unusable     → FAILED_PRECONDITION
    ├── FailedPrecondition    the server lacks what the call needs (a GPU)  → FAILED_PRECONDITION
    └── ModelExecutionError   the backend raised while running a batch     → INTERNAL

The core raises these and never imports grpc.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error the server reports to a client."""


class NotFound(ServingError):
    pass


class AlreadyExists(ServingError):
    pass


class FailedPrecondition(ServingError):
    pass


class InvalidInput(ServingError):
    pass


class QueueFull(ServingError):
    pass


class Unavailable(ServingError):
    pass


class DeadlineExceeded(ServingError):
    pass


class Cancelled(ServingError):
    pass


class Unauthenticated(ServingError):
    pass


class ModelConfigError(ServingError):
    """A model's config.pbtxt or model file cannot be used; the message names the file and field."""


class ModelExecutionError(ServingError):
    """The backend failed while running a batch; carries the backend's message."""
