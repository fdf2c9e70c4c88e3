"""Running the relay: bundled on the coordinator's grpc.aio server, or standalone (`helium relay`)."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from helium.net import is_loopback
from helium.v1 import relay_pb2
from relay import _wire
from relay._malloc import tune_malloc
from relay.api import RelayServicer
from relay.auth import RelayAuthenticator
from relay.config import RelayConfig, grpc_options
from relay.retention import RetentionSweeper
from relay.store import BlobStore, FilesystemBlobStore

__all__ = ["RELAY_SERVICE_NAME", "RelayServer", "add_relay_to_server", "is_loopback", "serve_standalone", "start_standalone"]

log = structlog.get_logger("relay.server")

RELAY_SERVICE_NAME = relay_pb2.DESCRIPTOR.services_by_name["RelayService"].full_name


def add_relay_to_server(server: grpc.aio.Server, config: RelayConfig, store: BlobStore | None = None,
                        on_bytes=None) -> RelayServicer:  # fmt: skip
    """Registers RelayService on `server` (the bundled mode: the coordinator's own server).

    `store` defaults to a FilesystemBlobStore at ``config.data_dir``; pass the one the coordinator
    also uses in-process (``store.put_bytes`` for task inputs). The server's max receive message
    length must fit ``config.chunk_bytes`` (the gRPC default of 4 MiB fits the default 1 MiB chunks);
    :func:`relay.config.grpc_options` gives matching options.
    """
    tune_malloc()  # process-wide: blob buffers are reused, not faulted in afresh per blob (relay._malloc)
    store = store if store is not None else FilesystemBlobStore(config.data_dir, config.max_blob_bytes)
    authenticator = RelayAuthenticator(
        config.coordinator_address,
        config.domain,
        window=config.auth_window,
        max_nonces=config.max_nonces,
        max_grant_cache=config.max_grant_cache,
        replay_path=config.replay_path,
    )
    servicer = RelayServicer(store, authenticator, config.chunk_bytes, on_bytes)
    handlers = {
        "Put": grpc.stream_unary_rpc_method_handler(
            servicer.Put,
            request_deserializer=_wire.decode_put_request,
            response_serializer=relay_pb2.PutResponse.SerializeToString,
        ),
        "Get": grpc.unary_stream_rpc_method_handler(
            servicer.Get,
            request_deserializer=relay_pb2.GetRequest.FromString,
            response_serializer=_wire.encode_get_response,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RELAY_SERVICE_NAME, handlers),))
    return servicer


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass
class RelayServer:
    """A started standalone relay: its server, health servicer, bound address and store."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    address: str
    store: BlobStore
    grace: float
    owns_store: bool = True
    sweeper: RetentionSweeper | None = None
    servicer: RelayServicer | None = None

    async def stop(self) -> None:
        """Health goes NOT_SERVING, in-flight calls get `grace` seconds, then the server stops."""
        await self.health.enter_graceful_shutdown()
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.server.stop(self.grace)
        if self.servicer is not None:
            self.servicer.close()
        if self.owns_store:
            self.store.close()


async def start_standalone(config: RelayConfig, store: BlobStore | None = None) -> RelayServer:
    """Starts a relay server with health and reflection on config.host:config.port (0 picks a free port),
    and its retention sweep.

    Plaintext is refused on a non-loopback host unless ``config.insecure``; with tls_cert/tls_key it
    serves TLS. Raises ValueError naming the problem.
    """
    tls = config.tls_cert is not None and config.tls_key is not None
    if not tls and not config.insecure and not is_loopback(config.host):
        raise ValueError(
            f"host {config.host} is not loopback: give --tls-cert and --tls-key, or --insecure for plaintext"
        )
    # Workers ping idle connections (keepalive): accept the pings, as the coordinator does, instead of
    # answering them with GOAWAY too_many_pings, which drops the connection and any transfer on it.
    keepalive = [("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_ping_strikes", 0),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000)]  # fmt: skip
    server = grpc.aio.server(options=[*grpc_options(config.chunk_bytes), *keepalive,
                                      ("grpc.so_reuseport", 0)])  # no port sharing  # fmt: skip
    owns_store = store is None
    store = store if store is not None else FilesystemBlobStore(config.data_dir, config.max_blob_bytes)
    servicer = add_relay_to_server(server, config, store)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (RELAY_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    bind = _hostport(config.host, config.port)
    if tls:
        assert config.tls_cert is not None and config.tls_key is not None
        creds = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
        port = server.add_secure_port(bind, creds)
    else:
        port = server.add_insecure_port(bind)
    await server.start()
    for name in ("", RELAY_SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    address = _hostport(config.host, port)
    sweeper = RetentionSweeper(store, config.retention, config.sweep_interval)
    sweeper.start()
    log.info("relay_started", address=address, tls=tls, data_dir=str(config.data_dir),
             retention_s=config.retention.total_seconds())  # fmt: skip
    return RelayServer(server, health_servicer, address, store, config.shutdown_grace.total_seconds(), owns_store,
                       sweeper, servicer)  # fmt: skip


async def serve_standalone(config: RelayConfig, stop: asyncio.Event | None = None) -> None:
    """Runs `helium relay`: starts, prints ``ready grpc=HOST:PORT`` on stdout, serves until SIGTERM/SIGINT
    (or `stop` is set), then shuts down gracefully."""
    relay = await start_standalone(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    print(f"ready grpc={relay.address}", flush=True, file=sys.stdout)
    try:
        await stop.wait()
    finally:
        log.info("relay_stopping", address=relay.address)
        await relay.stop()
