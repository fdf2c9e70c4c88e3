"""The gateway's only line to the coordinator: `helium.v1.TaskService` and `AdminService` over gRPC.

Every unary call has a deadline; a failed call becomes a `GatewayError` through
`errors.error_from_rpc`, here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc

from coordinator.gateway.errors import error_from_rpc
from helium.v1 import admin_pb2, admin_pb2_grpc, task_pb2, task_pb2_grpc

__all__ = ["CoordinatorClient"]


class CoordinatorClient:
    def __init__(self, target: str, *, admin_token: str = "", rpc_timeout: timedelta = timedelta(seconds=10),
                 tls_ca: Path | None = None, insecure: bool = False,
                 channel: grpc.aio.Channel | None = None) -> None:
        self.target = target
        if channel is None:
            from coordinator.tls import client_credentials

            options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            creds = client_credentials(target, tls_ca, insecure)
            channel = (grpc.aio.secure_channel(target, creds, options=options) if creds
                       else grpc.aio.insecure_channel(target, options=options))
        self._channel = channel
        self._tasks = task_pb2_grpc.TaskServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._admin_md = (("authorization", f"Bearer {admin_token}"),) if admin_token else ()
        self._timeout = rpc_timeout.total_seconds()

    @property
    def channel(self) -> grpc.aio.Channel:
        """The coordinator's channel; its bundled relay (RelayService) is reached through it too."""
        return self._channel

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, metadata=()):
        try:
            return await method(request, timeout=self._timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    async def create_task(self, request: task_pb2.CreateTaskRequest) -> task_pb2.CreateTaskResponse:
        return await self._call(self._tasks.CreateTask, request)

    async def get_task(self, task_id: str, proof: dict) -> task_pb2.Task:
        """`proof`: the creator's `timestamp` and TaskRead `signature` (GatewayWallet.read_proof)."""
        return (await self._call(self._tasks.GetTask, task_pb2.GetTaskRequest(task_id=task_id, **proof))).task

    async def watch_task(self, task_id: str, *, include_deltas: bool, deadline: timedelta,
                         proof: dict) -> AsyncIterator[task_pb2.WatchTaskResponse]:
        req = task_pb2.WatchTaskRequest(task_id=task_id, include_deltas=include_deltas, **proof)
        call = self._tasks.WatchTask(req, timeout=deadline.total_seconds())
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()

    async def cancel_task(self, task_id: str, signature: bytes, *, stop_running: bool = False) -> task_pb2.Task:
        req = task_pb2.CancelTaskRequest(task_id=task_id, signature=signature, stop_running=stop_running)
        return (await self._call(self._tasks.CancelTask, req)).task

    async def list_models(self) -> list[task_pb2.ModelInfo]:
        return list((await self._call(self._tasks.ListModels, task_pb2.ListModelsRequest())).models)

    async def network_info(self) -> task_pb2.GetNetworkInfoResponse:
        return await self._call(self._tasks.GetNetworkInfo, task_pb2.GetNetworkInfoRequest())

    async def list_nodes(self) -> list[admin_pb2.Node]:
        resp = await self._call(self._admin.ListNodes, admin_pb2.ListNodesRequest(), self._admin_md)
        return list(resp.nodes)

    async def stats(self) -> admin_pb2.GetStatsResponse:
        return await self._call(self._admin.GetStats, admin_pb2.GetStatsRequest(), self._admin_md)
