"""Thin HTTP routes of the gateway: read the request, call `GatewayServing`, shape the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Header, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from coordinator import metrics
from coordinator.gateway.protocol import ChatCompletionRequest, ImageGenerationRequest, ModelList
from coordinator.gateway.serving import GatewayServing

__all__ = ["router"]

WEB_DIR = Path(__file__).parent / "web"
router = APIRouter()


def _serving(request: Request) -> GatewayServing:
    return request.app.state.serving


def _client(request: Request) -> str:
    """The client's address (uvicorn takes it from X-Forwarded-For when the peer is a trusted proxy)."""
    return request.client.host if request.client else ""


def _gone(request: Request):
    """An awaitable that returns once the client has disconnected (the body is read by then, so the ASGI
    receive channel carries nothing else; `Request.is_disconnected` cannot see it under the middlewares)."""

    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.05)

    return wait


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           authorization: str | None = Header(default=None)) -> Response:
    serving = _serving(request)
    key = serving.authorize(authorization, _client(request))
    if body.stream:
        headers, events = await serving.stream_chat(body, key, _gone(request))
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    answer, headers = await serving.complete_chat(body, key, _gone(request))
    return JSONResponse(answer, headers=headers)


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return await _serving(request).models()


@router.post("/v1/images/generations")
async def image_generations(body: ImageGenerationRequest, request: Request,
                            authorization: str | None = Header(default=None)) -> JSONResponse:
    serving = _serving(request)
    key = serving.authorize(authorization, _client(request))
    answer, headers = await serving.generate_images(body, key, base_url=str(request.base_url).rstrip("/"),
                                                    disconnected=_gone(request))
    return JSONResponse(answer, headers=headers)


@router.get("/v1/images/{task_id}/{index}.png")
async def image_file(task_id: str, index: int, request: Request, expires: int | None = None, sig: str | None = None,
                     authorization: str | None = Header(default=None)) -> Response:
    serving = _serving(request)
    key = serving.authorize(authorization, _client(request)) if authorization else None
    return Response(serving.image_bytes(task_id, index, key=key, expires=expires, sig=sig), media_type="image/png")


@router.get("/v1/tasks/{task_id}")
async def get_task(task_id: str, request: Request, authorization: str | None = Header(default=None)) -> dict:
    serving = _serving(request)
    key = serving.authorize(authorization, _client(request))
    return await serving.task(task_id, key)


@router.get("/api/network")
async def network(request: Request) -> dict:
    return await _serving(request).network()


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(metrics.render_latest(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/", include_in_schema=False)
async def network_page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/chat", include_in_schema=False)
async def chat_page() -> FileResponse:
    return FileResponse(WEB_DIR / "chat.html", media_type="text/html")
