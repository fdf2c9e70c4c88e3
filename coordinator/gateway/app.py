"""The gateway's FastAPI app and its uvicorn server, embedded in the coordinator or standalone.

`create_app(settings, ...)` builds the app; collaborators not given are made
from the settings when the app starts (the gRPC channel must be created on the
serving event loop). `serve_gateway(settings, grpc_target)` binds the port
(0 picks one) and serves in the current event loop until `stop()`; uvicorn's
signal handlers are not installed, so the host process keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from coordinator import metrics
from coordinator.gateway._body_limit import BodyLimitMiddleware
from coordinator.gateway._coordinator import CoordinatorClient
from coordinator.gateway._wallet import GatewayWallet
from coordinator.gateway.api_router import WEB_DIR, router
from coordinator.gateway.config import GatewaySettings
from coordinator.gateway.errors import GatewayError
from coordinator.gateway.keys import KeyStore, RateLimiter
from coordinator.gateway.serving import GatewayServing

__all__ = ["GatewayServer", "create_app", "serve_gateway"]

log = structlog.get_logger("helium.gateway")


# What pydantic adds to a location inside a union ("fee.int", "stop.list[str]"): not part of the parameter's name.
_UNION_TAGS = frozenset({"int", "str", "float", "bool", "dict", "list", "none"})


def _param_of_loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if p not in _UNION_TAGS and "[" not in p and "-" not in p]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def create_app(settings: GatewaySettings, *, coordinator: CoordinatorClient | None = None,
               keys: KeyStore | None = None, wallet: GatewayWallet | None = None,
               limiter: RateLimiter | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_client = coordinator is None
        client = coordinator or CoordinatorClient(settings.coordinator, admin_token=settings.admin_token,
                                                  rpc_timeout=settings.rpc_timeout, tls_ca=settings.tls_ca,
                                                  insecure=settings.insecure)
        store = keys or KeyStore(settings.keys_db_path)
        purse = wallet or GatewayWallet(settings.creator_key_path, store)
        app.state.serving = GatewayServing(settings, client, store, purse, limiter)
        log.info("gateway_started", coordinator=client.target, creator=purse.address)
        try:
            yield
        finally:
            await app.state.serving.close()
            if own_client:
                await client.close()
            if keys is None:
                store.close()

    app = FastAPI(title="Helium gateway", version="1", lifespan=lifespan)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    # Before the router: bounds a body's size and JSON nesting before FastAPI parses it or checks the API key.
    app.add_middleware(BodyLimitMiddleware)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.monotonic()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", None)
        if route and route.startswith(("/v1/", "/api/")):
            metrics.observe_gateway_request(route, response.status_code, time.monotonic() - started)
        return response

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = _param_of_loc(tuple(first.get("loc", ())))
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param or None,
                          "code": "invalid_value"}}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("gateway_internal_error", error=repr(exc))
        return JSONResponse(GatewayError("internal error").body(), status_code=500)

    return app


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the host process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclasses.dataclass
class GatewayServer:
    """A running gateway: `host`, `port` (the bound one), `url`; `await stop()` ends it."""

    host: str
    port: int
    _server: uvicorn.Server
    _task: asyncio.Task

    @property
    def app(self) -> FastAPI:
        return self._server.config.app

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self, grace_s: float = 10.0) -> None:
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait(self) -> None:
        await self._task


async def serve_gateway(settings: GatewaySettings, grpc_target: str | None = None, *,
                        admin_token: str | None = None, startup_timeout: float = 15.0,
                        **collaborators) -> GatewayServer:
    """Starts the gateway on settings.host:settings.http_port (0 = any free port) in this event loop.

    `grpc_target` (the coordinator's gRPC address) and `admin_token` override the settings."""
    overrides = {}
    if grpc_target is not None:
        overrides["coordinator"] = grpc_target
    if admin_token is not None:
        overrides["admin_token"] = admin_token
    settings = dataclasses.replace(settings, **overrides)
    app = create_app(settings, **collaborators)
    sock = socket.create_server((settings.host, settings.http_port), reuse_port=False)
    sock.setblocking(False)
    # Behind a trusted proxy the client address (the bad-key lockout's key) is the one it forwards.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=5,
                            proxy_headers=True, forwarded_allow_ips=",".join(settings.trusted_proxies))
    server = _QuietServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise RuntimeError("gateway server exited during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"gateway did not start within {startup_timeout}s")
        await asyncio.sleep(0.02)
    port = sock.getsockname()[1]
    log.info("gateway_listening", host=settings.host, port=port)
    return GatewayServer(host=settings.host, port=port, _server=server, _task=task)


def web_dir() -> Path:
    return WEB_DIR
