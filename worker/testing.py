"""Test doubles of the executor, for tests, simulations and benchmarks only.

None of these runs a model. They make the network's behaviour reproducible
without a GPU: an honest node (`InstantExecutor`), a slow one that times out
(`SlowExecutor`), a cheat (`LyingExecutor`), a failing one
(`FailingExecutor`), an honest SD node whose images differ by a few pHash
bits (`JitteredExecutor`) and a cheat that signs the honest hash over another
output (`AlteredOutputExecutor`). Each implements `worker.executors.base.Executor`.

Everything derives from `keccak(b"helium:instant:" + canonical_args)`, so three
honest doubles given the same task agree, and a different seed (part of the
canonical args) gives a different result. A GPT double answers eight token ids
and a text, hashed like a real node (`helium.tasks.results.gpt_result_hash`);
an SD double stores small real PNGs (noise drawn from that digest) and signs
their real pHashes, so the coordinator's checks of what is returned against
what is signed hold for honest doubles and catch the cheats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import json
import os
import threading
import time

from eth_utils import keccak
from google.protobuf.message import Message

from chain.signing import sd_result_hash
from helium.tasks import canonical_args
from helium.tasks.results import HashedChoice, gpt_result_hash, phash64
from helium.v1 import task_pb2, worker_pb2
from worker.errors import (
    ExecutionCrashError,
    ExecutorError,
    InvalidArgsError,
    ModelNotFoundError,
    OutOfMemoryError,
)
from worker.executors.base import Capabilities, Executor, Job, Outcome, OutputBlob

__all__ = [
    "AlteredOutputExecutor",
    "FailingExecutor",
    "JitteredExecutor",
    "NodeFleet",
    "InstantExecutor",
    "LyingExecutor",
    "SlowExecutor",
    "instant_result_hash",
]


def _args_of(task_type: str, spec: Message) -> task_pb2.TaskArgs:
    args = task_pb2.TaskArgs()
    getattr(args, task_type).CopyFrom(spec)
    return args


def _instant_digest(task_type: str, spec: Message, salt: bytes = b"") -> bytes:
    # The nodes of one process (a simulated fleet) hash the same task: its canonical JSON is encoded once.
    return _digest_of(task_type, type(spec), spec.SerializeToString(deterministic=True), salt)


@functools.lru_cache(maxsize=4096)
def _digest_of(task_type: str, spec_type: type, wire: bytes, salt: bytes) -> bytes:
    return keccak(b"helium:instant:" + salt + canonical_args(_args_of(task_type, spec_type.FromString(wire))))


@functools.lru_cache(maxsize=4096)
def _instant_image(digest: bytes, index: int) -> tuple[bytes, int]:
    """Image `index` of a result: 32x32 noise drawn from the digest, as PNG bytes, and its real pHash."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(int.from_bytes(keccak(digest + bytes([index]))[:8], "big"))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    png = buf.getvalue()
    return png, phash64(png)


def _num_images(spec: Message) -> int:
    cfg = spec.task_config
    return cfg.num_images if cfg.HasField("num_images") and cfg.num_images > 0 else 1


def _instant_phashes(spec: Message, digest: bytes) -> tuple[int, ...]:
    return tuple(_instant_image(digest, i)[1] for i in range(_num_images(spec)))


def _instant_choice(digest: bytes, text: str | None = None) -> HashedChoice:
    return HashedChoice(0, tuple(digest[:8]), "stop", text if text is not None else f"instant {digest.hex()[:16]}")


def instant_result_hash(task_type: str, spec: Message, salt: bytes = b"") -> bytes:
    """The hash an InstantExecutor (with this salt) returns for this task: GPT, gpt_result_hash of its
    choice; SD, `sd_result_hash` of its images' pHashes, as a real SD node computes it."""
    digest = _instant_digest(task_type, spec, salt)
    if task_type == "sd":
        return sd_result_hash(_instant_phashes(spec, digest))
    return gpt_result_hash([_instant_choice(digest)])


class InstantExecutor:
    """An honest node that computes nothing: deterministic hash and output at once (plus `delay` seconds).

    `task_type` is "gpt" or "sd". `salt` changes the hash (LyingExecutor uses it). SD outcomes store one
    small blob per image (suffix "0", "1"...) unless `blobs=False`.
    """

    def __init__(self, task_type: str = "gpt", *, delay: float = 0.0, salt: bytes = b"", blobs: bool = True,
                 loaded_models: tuple[str, ...] = (), cached_models: tuple[str, ...] = ()) -> None:
        if task_type not in ("gpt", "sd"):
            raise ValueError(f"task_type must be gpt or sd, got {task_type!r}")
        self.task_type = task_type
        self.delay = delay
        self.salt = salt
        self.blobs = blobs
        self.loaded_models = loaded_models
        self.cached_models = cached_models
        self.jobs: list[Job] = []
        # Never blocks without a delay: the session may call it on the event loop, skipping a thread hop.
        # (SD draws and hashes small PNGs: a thread of its own.)
        self.inline = delay == 0 and type(self).run is InstantExecutor.run and task_type == "gpt"
        self._lock = threading.Lock()
        self.closed = False

    def capabilities(self) -> Capabilities:
        return Capabilities(task_type=self.task_type, backends=("instant",),
                            dtypes=("auto", "bfloat16", "float16", "float32"), quantize_bits=(4, 8),
                            loaded_models=self.loaded_models, cached_models=self.cached_models)

    def close(self) -> None:
        self.closed = True

    def _wait(self, job: Job) -> None:
        end = time.monotonic() + self.delay
        while (left := end - time.monotonic()) > 0:
            if job.is_cancelled():
                return
            time.sleep(min(left, 0.02))

    def run(self, job: Job) -> Outcome:
        with self._lock:
            self.jobs.append(job)
        self._wait(job)
        digest = _instant_digest(self.task_type, job.spec, self.salt)
        if self.task_type == "gpt":
            return self._gpt(job, digest)
        return self._sd(job, digest)

    def _gpt(self, job: Job, digest: bytes, shown: str | None = None) -> Outcome:
        spec = job.spec
        choice = _instant_choice(digest)
        text = shown if shown is not None else choice.content
        if job.on_delta is not None:
            base = {"id": f"chatcmpl-{job.task_id[2:18]}", "object": "chat.completion.chunk", "model": spec.model}
            job.on_delta({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for word in text.split(" "):
                job.on_delta({**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]})
            job.on_delta({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        doc = {
            "id": f"chatcmpl-{job.task_id[2:18]}",
            "object": "chat.completion",
            "created": 0,
            "model": spec.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "token_ids": list(choice.token_ids)}],
            "usage": {"prompt_tokens": len(spec.messages), "completion_tokens": 2,
                      "total_tokens": len(spec.messages) + 2},
        }
        return Outcome(result_hash=gpt_result_hash([choice]), output=json.dumps(doc, separators=(",", ":")).encode(),
                       prompt_tokens=len(spec.messages), completion_tokens=2)

    def _sd(self, job: Job, digest: bytes, stored: bytes | None = None) -> Outcome:
        cfg = job.spec.task_config
        phashes = _instant_phashes(job.spec, digest)
        n = len(phashes)
        steps = cfg.steps if cfg.HasField("steps") else 20
        pngs = [_instant_image(stored or digest, i)[0] for i in range(n)]
        blobs = tuple(OutputBlob(suffix=str(i), data=png, content_type="image/png")
                      for i, png in enumerate(pngs)) if self.blobs else ()
        manifest = {"images": [{"index": i, "phash": f"{p:016x}"} for i, p in enumerate(phashes)]}
        return Outcome(result_hash=sd_result_hash(phashes), output=json.dumps(manifest, separators=(",", ":")).encode(),
                       blobs=blobs, images=n, steps=steps * n, phashes=phashes)


class SlowExecutor(InstantExecutor):
    """An honest node that takes `seconds` per task (and stops early when the task is cancelled)."""

    def __init__(self, seconds: float, task_type: str = "gpt", **kwargs) -> None:
        super().__init__(task_type, delay=seconds, **kwargs)


class LyingExecutor(InstantExecutor):
    """A cheat: answers with a hash (and pHashes) no honest node produces. Each liar has its own random
    salt, so two liars disagree too; give them the same `salt` to make them collude."""

    def __init__(self, task_type: str = "gpt", *, salt: bytes | None = None, **kwargs) -> None:
        super().__init__(task_type, salt=salt if salt is not None else b"lie:" + os.urandom(8), **kwargs)


class JitteredExecutor(InstantExecutor):
    """An honest SD node whose images come out a little different (another card, another kernel): the
    honest pHashes with the bits `flip` flipped in image `image`, so its Hamming distance to an honest
    node is len(flip) on that image and 0 elsewhere. Its result hash is sd_result_hash of its own pHashes,
    so it differs from the honest hash while the results still match by pHash (below the threshold). It stores
    no images: no image has exactly those pHashes, and the coordinator checks every stored one."""

    def __init__(self, flip: tuple[int, ...] = (0,), *, image: int = 0, **kwargs) -> None:
        if not all(0 <= b < 64 for b in flip) or len(set(flip)) != len(flip):
            raise ValueError(f"flip must hold distinct bit positions in [0, 64), got {flip}")
        super().__init__("sd", **{**kwargs, "blobs": False})
        self.flip = tuple(flip)
        self.image = image

    def _sd(self, job: Job, digest: bytes) -> Outcome:
        honest = super()._sd(job, digest)
        phashes = list(honest.phashes)
        if self.image < len(phashes):
            phashes[self.image] ^= sum(1 << b for b in self.flip)
        phashes = tuple(phashes)
        manifest = {"images": [{"index": i, "phash": f"{p:016x}"} for i, p in enumerate(phashes)]}
        return dataclasses.replace(honest, result_hash=sd_result_hash(phashes), phashes=phashes,
                                   output=json.dumps(manifest, separators=(",", ":")).encode())  # fmt: skip


class AlteredOutputExecutor(InstantExecutor):
    """A cheat that signs the honest result but returns another output: GPT, the honest token ids and hash
    with `text` as the content; SD, the honest pHashes and hash over other images (a liar's PNGs)."""

    def __init__(self, task_type: str = "gpt", *, text: str = "BUY CHEAP PILLS", **kwargs) -> None:
        super().__init__(task_type, **kwargs)
        self.text = text

    def _gpt(self, job: Job, digest: bytes, shown: str | None = None) -> Outcome:
        return super()._gpt(job, digest, shown=self.text)

    def _sd(self, job: Job, digest: bytes, stored: bytes | None = None) -> Outcome:
        return super()._sd(job, digest, stored=keccak(b"altered" + digest))


_ERRORS: dict[int, type[ExecutorError]] = {
    worker_pb2.ERROR_KIND_INVALID_ARGS: InvalidArgsError,
    worker_pb2.ERROR_KIND_OUT_OF_MEMORY: OutOfMemoryError,
    worker_pb2.ERROR_KIND_CRASH: ExecutionCrashError,
}


class FailingExecutor(InstantExecutor):
    """Fails every task with the error of `kind` (a worker_pb2.ErrorKind value), after `delay` seconds;
    `model_missing=True` raises the worker's ModelNotFoundError instead (what a node without the model reports)."""

    def __init__(self, kind: int = worker_pb2.ERROR_KIND_CRASH, task_type: str = "gpt", *,
                 message: str = "", model_missing: bool = False, **kwargs) -> None:
        if kind not in _ERRORS:
            raise ValueError(f"kind must be an ErrorKind other than UNSPECIFIED, got {kind}")
        super().__init__(task_type, **kwargs)
        self.kind = kind
        self.model_missing = model_missing
        self.message = message or f"test double failure ({worker_pb2.ErrorKind.Name(kind)})"

    def run(self, job: Job) -> Outcome:
        with self._lock:
            self.jobs.append(job)
        self._wait(job)
        if self.model_missing:
            raise ModelNotFoundError(job.spec.model if self.task_type == "gpt" else job.spec.base_model.name,
                                     "test double: not on this node")
        raise _ERRORS[self.kind](self.message)


def _instant_pair(index: int) -> list[Executor]:
    return [InstantExecutor("gpt"), InstantExecutor("sd")]


def _test_card(index: int):
    from worker.session import NodeProfile

    return NodeProfile(card_name="Test Card 24GB", vram_bytes=24 << 30, device="cuda:0")


class NodeFleet:
    """N in-process nodes against one coordinator, for simulations and benchmarks.

    Each node has its key from `keys` (for example keys staked beforehand) or a fresh one, its own stream, the executors `executors(i)` returns
    (default: honest instant GPT + SD doubles) and the card `profiles(i)` returns (default: one test
    card). `async with NodeFleet(...) as fleet:` returns once every node is registered; leaving it
    closes them all. `config` overrides (timeouts, heartbeat) apply to every node.
    """

    def __init__(self, coordinator: str, n: int, *, executors=_instant_pair, profiles=_test_card,
                 config=None, keys=None, register_timeout: float = 30.0, **node_kwargs) -> None:
        from worker.config import WorkerConfig

        self.coordinator = coordinator
        self.n = n
        self.config = config or WorkerConfig(coordinator=coordinator, executor="instant")
        if self.config.coordinator != coordinator:
            raise ValueError(f"config.coordinator {self.config.coordinator!r} is not {coordinator!r}")
        self._executors, self._profiles = executors, profiles
        if keys is not None and len(keys) != n:
            raise ValueError(f"keys must hold one key per node ({n}), got {len(keys)}")
        self._keys = keys
        self._register_timeout = register_timeout
        self._node_kwargs = node_kwargs
        self.nodes: list = []
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> NodeFleet:
        from eth_account import Account

        from worker.session import WorkerNode

        for i in range(self.n):
            key = self._keys[i] if self._keys is not None else Account.create()
            node = WorkerNode(self.config, key, list(self._executors(i)), profile=self._profiles(i),
                              **self._node_kwargs)
            self.nodes.append(node)
            self.tasks.append(asyncio.create_task(node.run(), name=f"fleet-node-{i}"))
        waits = [asyncio.create_task(n.registered.wait()) for n in self.nodes]
        done, pending = await asyncio.wait(waits, timeout=self._register_timeout)
        failed = [t for t in self.tasks if t.done()]
        if pending or failed:
            for w in pending:
                w.cancel()
            await self.close()
            errors = [repr(t.exception()) for t in failed if not t.cancelled() and t.exception()]
            raise TimeoutError(f"{len(pending)} of {self.n} nodes did not register within "
                               f"{self._register_timeout:g}s; errors: {errors[:3]}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def drain(self) -> None:
        await asyncio.gather(*(n.drain("fleet drain") for n in self.nodes), return_exceptions=True)


async def _fleet(args) -> int:
    import signal
    from datetime import timedelta

    from chain.signing import load_or_create_key
    from worker.config import WorkerConfig
    from worker.session import NodeProfile

    cards = [c.split("=") for c in args.cards.split(",")]
    keys = None
    if args.keys_dir:
        keys = [load_or_create_key(f"{args.keys_dir}/node-{i}.key") for i in range(args.nodes)]

    def executors(i: int) -> list[Executor]:
        double = LyingExecutor if i < args.liars else InstantExecutor
        return [double("gpt", delay=args.delay), double("sd", delay=args.delay)]

    def profiles(i: int):
        name, gib = cards[i % len(cards)]
        return NodeProfile(card_name=name, vram_bytes=int(float(gib) * 2**30), device=f"cuda:{i}")

    config = WorkerConfig(coordinator=args.coordinator, executor="instant", tls_ca=args.tls_ca,
                          insecure=args.insecure, drain_timeout=timedelta(seconds=30))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with NodeFleet(args.coordinator, args.nodes, executors=executors, profiles=profiles, config=config,
                         keys=keys) as fleet:
        print(f"ready nodes={args.nodes} coordinator={args.coordinator}", flush=True)
        runs = asyncio.gather(*fleet.tasks, return_exceptions=True)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({runs, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await fleet.drain()
        waiter.cancel()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m worker.testing`: a fleet of instant test-double nodes in one process (benchmarks, simulations)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m worker.testing", description=main.__doc__)
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    p.add_argument("--nodes", type=int, default=30)
    p.add_argument("--liars", type=int, default=0, help="the first N nodes run LyingExecutor")
    p.add_argument("--delay", type=float, default=0.0, help="seconds each task takes")
    p.add_argument("--cards", default="Test Card 24GB=24", help="NAME=GiB,... given to the nodes in turn")
    p.add_argument("--keys-dir", help="load or create node-<i>.key here (to stake them first); default: fresh keys")
    p.add_argument("--tls-ca")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    from helium.log import configure_logging

    configure_logging(False, args.log_level)
    return asyncio.run(_fleet(args))


if __name__ == "__main__":
    raise SystemExit(main())
