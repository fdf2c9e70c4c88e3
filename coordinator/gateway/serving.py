"""Serving logic of the OpenAI-compatible gateway. Collaborators come in through the constructor.

A chat request becomes a GPT task signed by the gateway wallet (`_mapping`,
`_wallet`), is sent with CreateTask, and is answered once the coordinator has
VALIDATED it (early quorum: two matching results of three). Streaming follows
`_stream` (read its docstring for the verified-streaming behaviour). Each API
key's fee is reserved before CreateTask and committed or released by a
background watcher once the task ends. A client that goes away before the
quorum abandons its task: the gateway cancels it (CancelTask with stop_running),
so its nodes stop, no fee is taken and the key's reservation is released.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import json_format

from chain.signing import Domain
from coordinator import metrics
from coordinator.gateway._access import AuthThrottle, ImageUrls
from coordinator.gateway._answers import (
    DONE_STATES,
    FAILED_STATES,
    STATE,
    TYPE,
    ImageCache,
    answer_headers,
    failed,
    fingerprint,
    helium_field,
    public_node,
    sse,
    task_seed,
    task_summary,
)
from coordinator.gateway._coordinator import CoordinatorClient
from coordinator.gateway._mapping import chat_request_to_args, parse_fee
from coordinator.gateway._stream import StreamVerifier
from coordinator.gateway._wallet import GatewayWallet
from coordinator.gateway.config import GatewaySettings
from coordinator.gateway.errors import (
    AuthenticationError,
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    NotFoundError,
    NotImplementedFeatureError,
    TaskFailedError,
)
from coordinator.gateway.keys import ApiKey, KeyStore, RateLimiter
from coordinator.gateway.protocol import ChatCompletionRequest, ImageGenerationRequest, ModelCard, ModelList
from helium.v1 import task_pb2

__all__ = ["Disconnected", "GatewayServing", "Submitted"]

# Returns once the HTTP client has gone away (api_router reads the ASGI receive channel for it).
Disconnected = Callable[[], Awaitable[None]]

log = structlog.get_logger("helium.gateway")


@dataclass(frozen=True)
class Submitted:
    task_id: str
    fee: int
    model: str
    grant: task_pb2.RelayGrant | None = None
    domain: Domain | None = None
    seed: int = 0


class GatewayServing:
    def __init__(self, settings: GatewaySettings, coordinator: CoordinatorClient, keys: KeyStore,
                 wallet: GatewayWallet, limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.coordinator = coordinator
        self.keys = keys
        self.wallet = wallet
        self.limiter = limiter or RateLimiter()
        self._network: tuple[float, task_pb2.GetNetworkInfoResponse] | None = None
        self._models: tuple[float, list[task_pb2.ModelInfo]] | None = None
        self._images = ImageCache(settings.image_url_cache)
        self.throttle = AuthThrottle(settings.auth_max_failures, 60.0, settings.auth_lockout.total_seconds())
        self.image_urls = ImageUrls(keys.secret("image_urls"), settings.image_url_ttl.total_seconds())
        self._background: set[asyncio.Task] = set()
        self._abandoned: set[str] = set()

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- auth -------------------------------------------------------------------------------------

    def authorize(self, authorization: str | None, client: str = "") -> ApiKey | None:
        """The caller's API key (401 when bad), after its rate limit (429). An address that sent too many
        bad keys is refused (429) before its key is even looked at.

        With `require_api_key` off (local development only) no key is checked and None is returned."""
        if not self.settings.require_api_key:
            return None
        self.throttle.check(client)
        secret = None
        if authorization and authorization.lower().startswith("bearer "):
            secret = authorization[7:].strip()
        try:
            key = self.keys.authenticate(secret)
        except AuthenticationError:
            self.throttle.failed(client)
            raise
        self.throttle.succeeded(client)
        self.limiter.check(key.id, key.rate_per_min)
        return key

    def check_owner(self, task_id: str, key: ApiKey | None) -> str:
        """The task id, when `key` created it; 404 otherwise, as for a task that does not exist."""
        task_id = task_id.lower()
        if key is not None and self.keys.owner(task_id) != key.id:
            raise NotFoundError(f"task {task_id} not found")
        return task_id

    async def _proof(self, task_id: str) -> dict:
        """The gateway wallet's proof that it created `task_id` (reads are for the creator only)."""
        domain = await self._domain()
        try:
            return self.wallet.read_proof(task_id, domain)
        except ValueError:  # not a task id: the coordinator names the field
            return {}

    # --- submission -------------------------------------------------------------------------------

    async def network_info(self) -> task_pb2.GetNetworkInfoResponse:
        now = time.monotonic()
        if self._network is None or now - self._network[0] > 60:
            self._network = (now, await self.coordinator.network_info())
        return self._network[1]

    async def _submit(self, args: task_pb2.TaskArgs, raw_fee: Any, key: ApiKey | None, model: str,
                      stream: bool = False) -> Submitted:  # fmt: skip
        info = await self.network_info()
        fee = parse_fee(raw_fee, self.settings.default_fee_wei, int(info.min_fee or 0))
        domain = Domain(chain_id=int(info.chain_id), verifying_contract=info.verifying_contract)
        # EIP-712 signing takes milliseconds of pure Python: keep it off the event loop.
        signed = await asyncio.to_thread(self.wallet.sign, args, fee=fee, deadline=self.settings.task_deadline,
                                         domain=domain)
        signed.request.stream_deltas = stream  # nodes stream token deltas only when a client will read them
        if key is not None:
            self.keys.own(signed.task_id, key.id)
            self.keys.reserve(key.id, signed.task_id, fee)
        try:
            resp = await self.coordinator.create_task(signed.request)
        except BaseException:
            if key is not None:
                self.keys.release(signed.task_id)
            raise
        task_id = resp.task_id or signed.task_id
        log.info("gateway_task_created", task_id=task_id, key=key.id if key else None, fee=fee, model=model)
        self._spawn(self._account(task_id, signed.task_id if key is not None else None))
        grant = resp.grant if resp.HasField("grant") else None
        seed = args.gpt.seed if args.WhichOneof("kind") == "gpt" else args.sd.task_config.seed
        return Submitted(task_id=task_id, fee=fee, model=model, grant=grant, domain=domain, seed=seed)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def guard(self, task_id: str, disconnected: Disconnected | None) -> asyncio.Task | None:
        """Watches the HTTP client while its task runs; if it goes away first, the task is cancelled. The
        caller cancels the guard once its answer is ready."""
        if disconnected is None:
            return None

        async def watch() -> None:
            await disconnected()
            self.abandon(task_id)

        return self._spawn(watch())

    def abandon(self, task_id: str) -> None:
        """The client left before the answer: cancel the task in the background (on its own task, so that
        the request's end cannot cut it short)."""
        if task_id not in self._abandoned:
            self._abandoned.add(task_id)
            self._spawn(self._cancel_abandoned(task_id))

    async def _cancel_abandoned(self, task_id: str) -> None:
        log.info("gateway_client_gone", task_id=task_id)
        try:
            domain = await self._domain()
            task = await self.coordinator.cancel_task(task_id, self.wallet.sign_cancel(task_id, domain),
                                                      stop_running=True)
            log.info("gateway_task_abandoned", task_id=task_id, state=STATE.get(task.state))
        except GatewayError as exc:  # validated meanwhile (the answer stands, and is paid), or unreachable
            log.info("gateway_cancel_refused", task_id=task_id, error=exc.message)

    async def _domain(self) -> Domain:
        info = await self.network_info()
        return Domain(chain_id=int(info.chain_id), verifying_contract=info.verifying_contract)

    async def _account(self, task_id: str, reservation: str | None) -> None:
        """Watches one task to its end: commits or releases its key's reservation."""
        final = None
        try:
            async for ev in self.coordinator.watch_task(task_id, include_deltas=False,
                                                         deadline=self.settings.task_deadline,
                                                         proof=await self._proof(task_id)):
                if ev.HasField("task") and ev.task.state in DONE_STATES + FAILED_STATES:
                    final = ev.task
                    break
        except GatewayError as exc:
            log.warning("gateway_watch_failed", task_id=task_id, error=str(exc))
        except asyncio.CancelledError:
            raise
        if final is None:
            return  # unknown end: the reservation stays (the safe side)
        if reservation is not None:
            (self.keys.commit if final.state in DONE_STATES else self.keys.release)(reservation)

    # --- chat -------------------------------------------------------------------------------------

    def map_chat(self, req: ChatCompletionRequest) -> task_pb2.TaskArgs:
        return chat_request_to_args(req)

    async def submit_chat(self, req: ChatCompletionRequest, key: ApiKey | None) -> Submitted:
        args = self.map_chat(req)
        await self.check_model(req.model, task_pb2.TASK_TYPE_GPT)
        return await self._submit(args, req.fee, key, req.model, stream=bool(req.stream))

    async def _model_infos(self) -> list[task_pb2.ModelInfo]:
        now = time.monotonic()
        if self._models is None or now - self._models[0] > self.settings.models_cache_s:
            self._models = (now, await self.coordinator.list_models())
        return self._models[1]

    async def check_model(self, model: str, task_type: int) -> None:
        """Before any fee is reserved: 404 model_not_found when no available node has `model` loaded or cached
        (ListModels; the official client does not retry a 404), 400 when it is a model of another task type
        (a chat request on an image model)."""
        if not self.settings.require_listed_model:
            return
        types = {m.type for m in await self._model_infos() if m.model == model}
        if task_type not in types:
            self._models = None  # a node may have just joined: look again once
            types = {m.type for m in await self._model_infos() if m.model == model}
        if task_type in types:
            return
        if types:
            kind = {task_pb2.TASK_TYPE_GPT: "a chat (gpt)", task_pb2.TASK_TYPE_SD: "an image (sd)"}
            route = {task_pb2.TASK_TYPE_GPT: "/v1/chat/completions", task_pb2.TASK_TYPE_SD: "/v1/images/generations"}
            other = sorted(types)[0]
            raise InvalidRequestError(f"model {model!r} is {kind.get(other, 'another kind of')} model, not "
                                      f"{kind[task_type]} one: send it to {route.get(other, 'its route')}",
                                      param="model", code="model_type_mismatch")
        raise NotFoundError(f"The model {model!r} does not exist or no available node serves it (see GET "
                            "/v1/models)", param="model", code="model_not_found")

    async def wait_validated(self, task_id: str) -> task_pb2.Task:
        """The task once VALIDATED (or SETTLED); TaskFailedError if aborted, GatewayTimeoutError if late."""
        timeout = self.settings.request_timeout
        try:
            async with asyncio.timeout(timeout.total_seconds()):
                async for ev in self.coordinator.watch_task(task_id, include_deltas=False, deadline=timeout,
                                                             proof=await self._proof(task_id)):
                    if ev.HasField("task"):
                        if ev.task.state in DONE_STATES:
                            return ev.task
                        if ev.task.state in FAILED_STATES:
                            raise failed(ev.task)
        except TimeoutError:
            raise GatewayTimeoutError(f"task {task_id} was not validated within {timeout}") from None
        task = await self.coordinator.get_task(task_id, await self._proof(task_id))
        if task.state in DONE_STATES:
            return task
        raise failed(task) if task.state in FAILED_STATES else TaskFailedError(
            f"task {task_id}: watch ended in state {STATE.get(task.state)}", code="watch_ended")

    async def _validated_unless_gone(self, task_id: str, disconnected: Disconnected | None) -> task_pb2.Task:
        guard = self.guard(task_id, disconnected)
        try:
            return await self.wait_validated(task_id)
        finally:
            if guard is not None:
                guard.cancel()

    async def complete_chat(self, req: ChatCompletionRequest, key: ApiKey | None,
                            disconnected: Disconnected | None = None) -> tuple[dict, dict[str, str]]:
        started = time.monotonic()
        sub = await self.submit_chat(req, key)
        task = await self._validated_unless_gone(sub.task_id, disconnected)
        body = json.loads(task.result.output_json)
        body["system_fingerprint"] = fingerprint(task_seed(task))
        body["helium"] = helium_field(task)
        metrics.observe_gateway_answer("complete", time.monotonic() - started)
        return body, answer_headers(task.task_id, task.result.validation)

    async def stream_chat(self, req: ChatCompletionRequest, key: ApiKey | None,
                          disconnected: Disconnected | None = None) -> tuple[dict[str, str], AsyncIterator[str]]:
        """Creates the task now (its errors are HTTP errors), then returns the SSE body."""
        started = time.monotonic()
        sub = await self.submit_chat(req, key)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        headers = answer_headers(sub.task_id, "pending")
        return headers, self._guarded_sse(sub, include_usage, started, disconnected)

    async def _guarded_sse(self, sub: Submitted, include_usage: bool, started: float,
                           disconnected: Disconnected | None) -> AsyncIterator[str]:
        guard = self.guard(sub.task_id, disconnected)
        ended = False
        try:
            async for event in self._sse(sub, include_usage, started):
                yield event
            ended = True
        finally:
            if guard is not None:
                guard.cancel()
            if not ended:  # the server stopped reading the stream: its client went away
                self.abandon(sub.task_id)

    async def _sse(self, sub: Submitted, include_usage: bool, started: float) -> AsyncIterator[str]:
        verifier = StreamVerifier(task_id=sub.task_id, model=sub.model, system_fingerprint=fingerprint(sub.seed))
        timeout = self.settings.request_timeout
        first = True
        try:
            async with asyncio.timeout(timeout.total_seconds()):
                async for ev in self.coordinator.watch_task(sub.task_id, include_deltas=True, deadline=timeout,
                                                             proof=await self._proof(sub.task_id)):
                    if ev.HasField("delta"):
                        d = ev.delta
                        for chunk in verifier.on_delta(d.node, d.seq, json.loads(d.chunk_json)):
                            if first:
                                metrics.observe_gateway_ttft(time.monotonic() - started)
                                first = False
                            yield sse(chunk)
                        continue
                    task = ev.task
                    if task.state in DONE_STATES:
                        output = json.loads(task.result.output_json)
                        chunks = verifier.on_validated(output, helium_field(task, verifier.streamer), include_usage)
                        for chunk in chunks:
                            yield sse(chunk)
                        yield "data: [DONE]\n\n"
                        metrics.record_stream_outcome("validated")
                        metrics.observe_gateway_answer("stream", time.monotonic() - started)
                        return
                    if task.state in FAILED_STATES:
                        raise failed(task)
            raise TaskFailedError(f"task {sub.task_id}: the coordinator ended the watch before validation",
                                  code="watch_ended")
        except TimeoutError:
            exc: GatewayError = GatewayTimeoutError(f"task {sub.task_id} was not validated within {timeout}")
        except GatewayError as err:
            exc = err
        log.warning("gateway_stream_failed", task_id=sub.task_id, error=exc.message, code=exc.code)
        metrics.record_stream_outcome(exc.code or "error")
        yield sse(verifier.error_chunk(exc))

    # --- models, tasks, images --------------------------------------------------------------------

    async def models(self) -> ModelList:
        """One entry per model id (OpenAI ids are unique); a model served for several task types lists them all."""
        self._models = (time.monotonic(), await self.coordinator.list_models())
        merged: dict[str, ModelCard] = {}
        for m in sorted(self._models[1], key=lambda m: (m.model, m.type)):
            cards = [{"name": c.name, "vram_bytes": c.vram_bytes} for c in m.cards]
            card = merged.get(m.model)
            if card is None:
                merged[m.model] = ModelCard(id=m.model, type=TYPE.get(m.type, "unspecified"),
                                            types=[TYPE.get(m.type, "unspecified")], cards=cards,
                                            nodes=m.nodes, loaded_nodes=m.loaded_nodes)
                continue
            card.types.append(TYPE.get(m.type, "unspecified"))
            card.cards += [c for c in cards if c not in card.cards]
            card.nodes, card.loaded_nodes = max(card.nodes, m.nodes), max(card.loaded_nodes, m.loaded_nodes)
        return ModelList(data=list(merged.values()))

    async def task(self, task_id: str, key: ApiKey | None) -> dict[str, Any]:
        """The task, with its validated output (`output`: the chat.completion) once there is one; only for
        the key that created it."""
        task_id = self.check_owner(task_id, key)
        task = await self.coordinator.get_task(task_id, await self._proof(task_id))
        out = task_summary(task)
        out["output"] = json.loads(task.result.output_json) if task.result.output_json else None
        return out

    async def generate_images(self, req: ImageGenerationRequest, key: ApiKey | None, base_url: str = "",
                              disconnected: Disconnected | None = None) -> tuple[dict, dict[str, str]]:
        """An SD task; the validated images as base64 PNG (b64_json) or as gateway URLs (url)."""
        import base64

        from coordinator.gateway._images import image_request_to_args, read_task_images

        args = image_request_to_args(req)
        if not self.settings.images_enabled:
            raise NotImplementedFeatureError(
                "image generation is switched off on this gateway (images_enabled=false); submit an SD task "
                "with `helium task submit` instead", param="model")
        started = time.monotonic()
        await self.check_model(args.sd.base_model.name, task_pb2.TASK_TYPE_SD)
        sub = await self._submit(args, req.fee, key, args.sd.base_model.name)
        task = await self._validated_unless_gone(sub.task_id, disconnected)
        if sub.grant is None:
            raise TaskFailedError(f"task {task.task_id}: the coordinator gave no relay grant to read the images",
                                  code="no_grant")
        pngs = await read_task_images(self.coordinator.channel, self.wallet.account, sub.domain, task, sub.grant)
        if req.response_format == "url":
            for i, png in enumerate(pngs):
                self._images.put(f"{task.task_id}/{i}", png)
            data = [{"url": self.image_urls.url(base_url, task.task_id, i)} for i in range(len(pngs))]
        else:
            data = [{"b64_json": base64.b64encode(png).decode()} for png in pngs]
        metrics.observe_gateway_answer("images", time.monotonic() - started)
        body = {"created": int(time.time()), "data": data, "helium": helium_field(task)}
        return body, answer_headers(task.task_id, task.result.validation)

    def image_bytes(self, task_id: str, index: int, *, key: ApiKey | None, expires: int | None = None,
                    sig: str | None = None) -> bytes:
        """An image served as a URL: with the URL's signature, or with the key that created the task."""
        if key is not None:
            task_id = self.check_owner(task_id, key)
        elif self.settings.require_api_key:
            self.image_urls.check(task_id, index, expires, sig)
        png = self._images.get(f"{task_id}/{index}")
        if png is None:
            raise NotFoundError(f"image {index} of task {task_id} is not held by this gateway (it keeps the "
                                f"last {self._images.capacity} images served as URLs)")
        return png

    # --- network page -----------------------------------------------------------------------------

    async def network(self) -> dict[str, Any]:
        stats, nodes = await asyncio.gather(self.coordinator.stats(), self.coordinator.list_nodes())
        return {
            "stats": json_format.MessageToDict(stats, preserving_proto_field_name=True),
            "nodes": [public_node(n) for n in nodes],
            "gateway": {"address": self.wallet.address},
        }
