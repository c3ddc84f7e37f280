"""serving.admin.ModelAdmin: traffic policy, shadow, promote, rollback, history and version states.

Each RPC converts the request (api/admin_codec.py), calls the core (serving/admin/operations.py) and converts
the reply; errors become status codes in serving/api/status.py. Authentication is serving/api/calls.py's
(serving/api/auth.py). A change's `source` in the history is the operator named by the caller's
`x-operator` metadata (serving ctl sends user@host) and the peer address.
"""

from __future__ import annotations

import grpc

from serving.admin.operations import ModelAdmin
from serving.api.admin_codec import (
    decode_rollout,
    decode_weights,
    encode_change,
    encode_history,
    encode_rollout,
    encode_shadow_stats,
    encode_status,
    encode_versions,
)
from serving.api.status import grpc_errors
from serving.errors import FailedPrecondition, InvalidInput
from serving.proto import admin_pb2 as pb
from serving.proto import admin_pb2_grpc
from serving.rollout.controller import RolloutController

OPERATOR_METADATA = "x-operator"
MAX_OPERATOR_CHARS = 200


def source_of(context: grpc.aio.ServicerContext) -> str:
    operator = "admin"
    for key, value in context.invocation_metadata() or ():
        if key == OPERATOR_METADATA and isinstance(value, str) and value.strip():
            operator = value.strip()[:MAX_OPERATOR_CHARS]
    return f"{operator} via {context.peer()}"


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServicer):
    def __init__(self, admin: ModelAdmin, rollouts: RolloutController | None = None) -> None:
        self._admin = admin
        self._rollouts = rollouts  # None: this server runs no rollout controller

    @grpc_errors
    async def GetPolicy(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.PolicyReply:
        return encode_status(self._admin.policy(request.model))

    @grpc_errors
    async def SetSplit(
        self, request: pb.SetSplitRequest, context: grpc.aio.ServicerContext
    ) -> pb.PolicyChange:
        sticky = request.sticky if request.HasField("sticky") else None
        entry = await self._admin.split(
            request.model, decode_weights(request.weights), sticky, source_of(context)
        )
        return encode_change(request.model, entry)

    @grpc_errors
    async def SetShadow(
        self, request: pb.SetShadowRequest, context: grpc.aio.ServicerContext
    ) -> pb.PolicyChange:
        entry = await self._admin.set_shadow(
            request.model, request.version, request.fraction, source_of(context)
        )
        return encode_change(request.model, entry)

    @grpc_errors
    async def ClearShadow(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.PolicyChange:
        return encode_change(request.model, await self._admin.clear_shadow(request.model, source_of(context)))

    @grpc_errors
    async def Promote(self, request: pb.PromoteRequest, context: grpc.aio.ServicerContext) -> pb.PolicyChange:
        entry = await self._admin.promote(request.model, request.version, source_of(context))
        return encode_change(request.model, entry)

    @grpc_errors
    async def Rollback(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.PolicyChange:
        return encode_change(request.model, await self._admin.rollback(request.model, source_of(context)))

    @grpc_errors
    async def ClearPolicy(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.PolicyChange:
        return encode_change(request.model, await self._admin.clear(request.model, source_of(context)))

    @grpc_errors
    async def History(self, request: pb.HistoryRequest, context: grpc.aio.ServicerContext) -> pb.HistoryReply:
        entries = await self._admin.history(request.model, request.limit or None)
        return encode_history(request.model, entries)

    @grpc_errors
    async def Versions(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.VersionsReply:
        versions = self._admin.versions(request.model)
        return encode_versions(self._admin.policy(request.model), versions)

    @grpc_errors
    async def ShadowStats(
        self, request: pb.ModelRef, context: grpc.aio.ServicerContext
    ) -> pb.ShadowStatsReply:
        return encode_shadow_stats(request.model, self._admin.shadow_stats(request.model))

    # ---- progressive rollouts (serving/rollout) ----------------------------------------------------

    def _controller(self) -> RolloutController:
        if self._rollouts is None:
            raise FailedPrecondition("this server runs no rollout controller")
        return self._rollouts

    @grpc_errors
    async def StartRollout(
        self, request: pb.StartRolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutStatus:
        plan = decode_rollout(request)
        return encode_rollout(await self._controller().start(request.model, plan, source_of(context)))

    @grpc_errors
    async def GetRollout(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.RolloutStatus:
        return encode_rollout(self._controller().status(request.model))

    @grpc_errors
    async def ControlRollout(
        self, request: pb.ControlRolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutStatus:
        controller, source = self._controller(), source_of(context)
        actions = {"pause": controller.pause, "resume": controller.resume, "abort": controller.abort}
        action = actions.get(request.action)
        if action is None:
            raise InvalidInput(f"action: {request.action!r} is not one of pause, resume, abort")
        return encode_rollout(await action(request.model, source))
