"""Builds the nodes of one worker process and runs them: one node per GPU, each with its own key.

`run_workers(config)` is what `helium worker` runs: it loads or creates each
node's key (`<data_dir>/keys/node-<gpu>.key`, mode 0600), detects its device,
builds its executors, connects every node, drains them all on SIGTERM / SIGINT
(a second signal exits at once), and returns the process exit status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import structlog

from chain.signing import load_or_create_key
from worker.config import WorkerConfig
from worker.errors import ConnectError
from worker.executors.base import Executor
from worker.session import NodeProfile, WorkerNode

__all__ = ["ExecutorFactory", "build_executors", "build_nodes", "device_profile", "node_gpus", "run_workers"]

log = structlog.get_logger("worker")

ExecutorFactory = Callable[[WorkerConfig, NodeProfile], Sequence[Executor]]

EXIT_OK = 0
EXIT_REFUSED = 1  # refused by the coordinator, disconnected, or reconnects exhausted
EXIT_SETUP = 2  # bad settings, no device, no executor


def node_gpus(config: WorkerConfig) -> tuple[int, ...]:
    """The device indexes this process serves, one node each. CPU and MPS are one node, index 0."""
    if config.device in ("cpu", "mps"):
        if config.gpus and config.gpus != (0,):
            raise ValueError(f"gpus {config.gpus} needs device cuda, got device {config.device}")
        return (0,)
    return config.gpus or (0,)


def device_profile(config: WorkerConfig, gpu: int) -> NodeProfile:
    """The honest card of node `gpu`, through worker.device (cuda > mps > cpu unless config.device forces one)."""
    from worker.device import detect_device, group_card_name

    info = detect_device(config.device)
    if info.kind == "cuda":
        info = detect_device(f"cuda:{gpu}")
    # The advertised card is the group key: device, backend and library versions (worker.device).
    info = dataclasses.replace(info, card=group_card_name(info.card, config.backend))
    if info.kind == "cuda":
        index = gpu

        def free_cuda() -> int:
            import torch

            return int(torch.cuda.mem_get_info(index)[0])

        return NodeProfile(card_name=info.card, vram_bytes=info.vram_bytes, device=info.torch_device,
                           free_vram=free_cuda)
    if config.gpus and config.gpus != (0,):
        raise ValueError(f"gpus {config.gpus} asked for, but the device is {info.kind}: no CUDA device")
    return NodeProfile(card_name=info.card, vram_bytes=info.vram_bytes, device=info.torch_device,
                       free_vram=_free_host_memory)


def _free_host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def build_executors(config: WorkerConfig, profile: NodeProfile) -> list[Executor]:
    """The executors of one node. `instant` / `lying`: the worker.testing doubles. `real`: GptExecutor and SdExecutor,
    each only if it imports and constructs here (a failure is logged and that type is not advertised);
    with model_budget_bytes they share one ModelCache of that budget, else each keeps its own default."""
    if config.executor in ("instant", "lying"):
        from worker.testing import InstantExecutor, LyingExecutor

        double = InstantExecutor if config.executor == "instant" else LyingExecutor
        delay = config.instant_delay.total_seconds()
        return [double("gpt", delay=delay), double("sd", delay=delay)]
    from worker.device import detect_device
    from worker.models import ModelCache

    device = detect_device(profile.device)
    cache = ModelCache(config.model_budget_bytes) if config.model_budget_bytes else None

    def gpt() -> Executor:
        from worker.executors.gpt import GptExecutor

        return GptExecutor(device=device, cache=cache, backend=config.backend)

    def sd() -> Executor:
        from worker.executors.sd import SdExecutor

        return SdExecutor(cache=cache, device=profile.device)

    builders: dict[str, Callable[[], Executor]] = {"gpt": gpt, "sd": sd}
    built: list[Executor] = []
    for name, build in builders.items():
        try:
            built.append(build())
        except Exception as exc:  # a missing optional backend only narrows what the node advertises
            log.warning("executor_unavailable", task_type=name, error=f"{type(exc).__name__}: {exc}")
    return built


def build_nodes(
    config: WorkerConfig,
    *,
    executor_factory: ExecutorFactory | None = None,
    profile_factory: Callable[[WorkerConfig, int], NodeProfile] | None = None,
    on_ready: Callable[[WorkerNode], None] | None = None,
    **node_kwargs: Any,
) -> list[WorkerNode]:
    """One WorkerNode per GPU of `config`, keys loaded or created under config.data_dir."""
    nodes = []
    for gpu in node_gpus(config):
        key = load_or_create_key(config.key_path(gpu))
        profile = (profile_factory or device_profile)(config, gpu)
        executors = list((executor_factory or build_executors)(config, profile))
        if not executors:
            raise ValueError(f"no executor could be built for node {gpu} ({profile.device}); see executor_unavailable")
        nodes.append(WorkerNode(config, key, executors, profile=profile, on_ready=on_ready, **node_kwargs))
    return nodes


def _ready_printer(config: WorkerConfig, out: TextIO) -> Callable[[WorkerNode], None]:
    def ready(node: WorkerNode) -> None:
        types = ",".join(sorted(node.jobs.executors))
        print(f'ready node={node.address} device={node.profile.device} card="{node.profile.card_name}" '
              f"vram_bytes={node.profile.vram_bytes} tasks={types} coordinator={config.coordinator}",
              file=out, flush=True)

    return ready


async def run_workers(
    config: WorkerConfig,
    *,
    executor_factory: ExecutorFactory | None = None,
    profile_factory: Callable[[WorkerConfig, int], NodeProfile] | None = None,
    install_signal_handlers: bool = True,
    out: TextIO | None = None,
) -> int:
    """Runs every node of `config` until drained or refused; returns the exit status (0 drained cleanly,
    1 refused / disconnected / unreachable, 2 bad setup). Prints one `ready node=...` line per node on `out`."""
    out = out or sys.stdout
    try:
        nodes = await asyncio.to_thread(
            build_nodes, config, executor_factory=executor_factory, profile_factory=profile_factory,
            on_ready=_ready_printer(config, out))
    except (ValueError, ConnectError, OSError) as exc:
        log.error("worker_setup_failed", error=str(exc))
        print(f"helium worker: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    loop = asyncio.get_running_loop()
    signals = _install_signals(loop, nodes) if install_signal_handlers else []
    if config.metrics_port:
        from worker.metrics import start_worker_metrics_server

        port = start_worker_metrics_server(config.metrics_port, host=config.metrics_host)
        log.info("metrics_serving", port=port)
    try:
        results = await asyncio.gather(*(n.run() for n in nodes), return_exceptions=True)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for node in nodes:
            for ex in node.jobs.executors.values():
                try:
                    ex.close()
                except Exception as exc:  # closing must not hide the run's own outcome
                    log.warning("executor_close_failed", node=node.address, error=str(exc))
    code = EXIT_OK
    for node, res in zip(nodes, results, strict=True):
        if isinstance(res, ConnectError):
            print(f"helium worker: node {node.address}: {res}", file=sys.stderr, flush=True)
            code = EXIT_REFUSED
        elif isinstance(res, BaseException):
            log.error("node_failed", node=node.address, error=f"{type(res).__name__}: {res}")
            code = EXIT_REFUSED
    return code


def _install_signals(loop: asyncio.AbstractEventLoop, nodes: list[WorkerNode]) -> list[int]:
    received: list[int] = []

    def on_signal(sig: int) -> None:
        received.append(sig)
        name = signal.Signals(sig).name
        if len(received) > 1:
            log.error("worker_exit_now", signal=name)
            sys.stderr.flush()
            os._exit(128 + sig)  # the executor threads cannot be interrupted; leave at once
        log.info("worker_draining", signal=name, nodes=len(nodes))
        for node in nodes:
            loop.create_task(node.drain(f"signal {name}"))

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no POSIX signals
            pass
    return installed
