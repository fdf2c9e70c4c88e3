"""Assembling and running the coordinator process: store, dispatcher, servicers,
bundled relay, health and reflection, TLS, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chain import signing
from coordinator.api.admin_servicer import AdminServicer
from coordinator.api.interceptors import AdminAuthInterceptor, ErrorInterceptor
from coordinator.api.task_servicer import TaskServicer
from coordinator.api.worker_servicer import WorkerServicer
from coordinator.config import CoordinatorConfig
from coordinator.service import hooks
from coordinator.service.dispatcher import Dispatcher, DispatchSettings
from coordinator.service.intake import IntakeSettings, TaskIntake
from coordinator.service.membership import Membership
from coordinator.store import SqliteStore
from coordinator.tls import server_credentials
from helium.v1 import (  # noqa: I001
    admin_pb2,
    admin_pb2_grpc,
    relay_pb2,
    task_pb2,
    task_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)
from relay.config import grpc_options as relay_grpc_options

__all__ = ["CoordinatorApp", "ProtocolParts", "backbone_parts", "load_admin_token"]

log = structlog.get_logger("coordinator")

SERVICE_NAMES = [
    task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    relay_pb2.DESCRIPTOR.services_by_name["RelayService"].full_name,
    "helium.v1.NodeService",
]

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Accept the workers' keepalive pings (10 s floor) instead of answering them with GOAWAY.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),  # a second network on this port must fail to bind, not share the port
    # The bundled relay's bulk transfers: large HTTP/2 frames, a per-stream window of a few chunks.
    *[(k, v) for k, v in relay_grpc_options() if k.startswith("grpc.http2.")],
]


@dataclass
class ProtocolParts:
    """The pluggable protocol: order, selection, membership, deposits, QoS, settlement."""

    domain: signing.Domain
    pricer: hooks.Pricer = field(default_factory=hooks.CreationPricer)
    selector: hooks.Selector = field(default_factory=hooks.UniformSelector)
    stakes: hooks.StakeCheck = field(default_factory=hooks.OpenMembership)
    deposits: hooks.DepositCheck = field(default_factory=hooks.NoDepositCheck)
    settlement: hooks.SettlementHook = field(default_factory=hooks.NoSettlement)
    qos: hooks.QosHook | None = None
    on_kick: Callable[[str], Awaitable[None]] | None = None
    stats_source: Callable[[], dict] | None = None
    # Long-running jobs (settlement batches...), started with the server, cancelled at shutdown.
    background: list[Callable[[Dispatcher], Awaitable[None]]] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] | None = None
    # The key the coordinator signs and sends with, when the chain decides it (embedded: the DevChain's
    # coordinator-role key); None: <data_dir>/coordinator.key.
    key: Any = None


async def backbone_parts(config: CoordinatorConfig, store, key) -> ProtocolParts:
    """No chain: open membership, no deposits, no settlement (tasks end VALIDATED)."""
    return ProtocolParts(domain=signing.DEV_DOMAIN, selector=hooks.UniformSelector(config.group_size))


def load_admin_token(config: CoordinatorConfig) -> str:
    if config.admin_token:
        return config.admin_token
    path = Path(config.data_dir) / "admin.token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class CoordinatorApp:
    """`await app.start()` binds and serves; `await app.stop()` shuts down gracefully."""

    def __init__(
        self,
        config: CoordinatorConfig,
        parts_factory: Callable[..., Awaitable[ProtocolParts]] = backbone_parts,
    ) -> None:
        self.config = config
        self.parts_factory = parts_factory
        self.address = ""
        self.http_address = ""
        self._tasks: list[asyncio.Task] = []
        self.gateway = None

    async def start(self) -> str:
        c = self.config
        data = Path(c.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.key = signing.load_or_create_key(data / "coordinator.key")
        self.admin_token = load_admin_token(c)
        self.store = SqliteStore(data / "coordinator.db")
        self.parts = parts = await self.parts_factory(c, self.store, self.key)
        if parts.key is not None:
            self.key = parts.key
        settings = DispatchSettings(
            heartbeat_interval_s=c.heartbeat_interval_s, lapse_after_missed=c.lapse_after_missed,
            idle_heartbeat_interval_s=c.idle_heartbeat_interval_s, max_assignments_per_node=c.max_assignments_per_node,
            group_size=c.group_size, quorum=c.quorum, phash_threshold=c.phash_threshold,
        )  # fmt: skip
        self.dispatcher = d = Dispatcher(
            self.store, settings, key=self.key, domain=parts.domain, queue=hooks.TaskQueue(c.queue_capacity),
            selector=parts.selector, pricer=parts.pricer, settlement=parts.settlement, qos=parts.qos,
        )  # fmt: skip
        d.recover()
        self.store.enable_group_commit()  # after recovery: from here on, a loop turn's writes share a commit
        from datetime import timedelta

        from coordinator.service.blob_retention import evidence_pinner
        from relay.config import RelayConfig
        from relay.retention import RetentionSweeper
        from relay.server import add_relay_to_server
        from relay.store import FilesystemBlobStore

        relay_cfg = RelayConfig(
            data_dir=data / "relay", coordinator_address=self.key.address, chain_id=parts.domain.chain_id,
            verifying_contract=parts.domain.verifying_contract, max_blob_bytes=c.max_blob_bytes,
            retention=timedelta(seconds=c.relay_retention_s), sweep_interval=timedelta(seconds=c.relay_sweep_interval_s),
        )  # fmt: skip
        self.relay_store = FilesystemBlobStore(relay_cfg.data_dir, relay_cfg.max_blob_bytes)
        # Blobs of a task with slash evidence outlive the relay's retention (coordinator.service.blob_retention).
        d.on_outcome.append(evidence_pinner(self.relay_store, c.relay_evidence_retention_s, c.phash_threshold))
        # The dispatcher recomputes the pHash of every image a node stored here (a relay of its own: the gateway does).
        d.image_store = None if c.relay_address else self.relay_store
        intake = TaskIntake(d, IntakeSettings(min_fee_wei=c.min_fee_wei, task_timeout_s=c.task_timeout_s,
                                              max_task_bytes=c.max_task_bytes),
                            parts.deposits, input_store=self.relay_store)  # fmt: skip
        self.membership = membership = Membership(d, parts.stakes, on_kick=parts.on_kick)

        self.server = server = grpc.aio.server(
            interceptors=[ErrorInterceptor(self.store.durable), AdminAuthInterceptor(self.admin_token)], options=GRPC_OPTIONS
        )
        task_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(intake, d, self.key.address, c.min_fee_wei, admin_token=self.admin_token), server
        )
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(
            WorkerServicer(d, membership, self.key.address, c.relay_address), server
        )
        admin = AdminServicer(d, membership, parts.stats_source)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
        from coordinator.api.node_servicer import NodeServicer  # a GPU operator's signed view of a node
        from helium.v1 import node_pb2_grpc

        node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(d, admin._node, window_s=membership.window_s), server)
        from coordinator import metrics

        add_relay_to_server(server, relay_cfg, self.relay_store, on_bytes=metrics.record_relay_bytes)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection([*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME], server)

        creds = server_credentials(c.host, c.tls_cert, c.tls_key, c.insecure)
        target = f"[{c.host}]:{c.port}" if ":" in c.host else f"{c.host}:{c.port}"
        port = server.add_secure_port(target, creds) if creds else server.add_insecure_port(target)
        await server.start()
        self.port = port
        self.address = f"{c.host}:{port}"
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(d.run(), name="dispatcher"))
        sweeper = RetentionSweeper(self.relay_store, relay_cfg.retention, relay_cfg.sweep_interval)
        self._tasks.append(asyncio.create_task(sweeper.run(), name="relay-retention"))
        for job in parts.background:
            self._tasks.append(asyncio.create_task(job(d)))
        if c.http_port >= 0:
            await self._start_gateway()
        log.info("coordinator_serving", address=self.address, coordinator=self.key.address,
                 chain_id=parts.domain.chain_id, tls=creds is not None)  # fmt: skip
        return self.address

    async def _start_gateway(self) -> None:
        from coordinator.gateway.embedded import start_embedded_gateway

        self.gateway = await start_embedded_gateway(self)
        self.http_address = self.gateway.address

    def ready_line(self) -> str:
        line = f"ready grpc={self.address}"
        if self.http_address:
            line += f" http={self.http_address}"
        return line

    async def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING, dispatch stops, in-flight calls get `grace` seconds, streams close."""
        grace = self.config.shutdown_grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        self.dispatcher.stop()
        if self.gateway is not None:
            await self.gateway.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self.dispatcher.nodes.values()):
            self.dispatcher.detach(session, "coordinator shutting down")
        await self.server.stop(grace)
        if self.parts.close is not None:
            await self.parts.close()
        self.store.close()
        log.info("coordinator_stopped")
