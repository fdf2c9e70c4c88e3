"""The `vllm` backend: CUDA only, optional (`pip install .[vllm]`), in batch-invariant mode.

Batch invariance (`VLLM_BATCH_INVARIANT=1`, set before vLLM is imported; needs
compute capability >= 8.0, vLLM >= 0.11) makes a request's tokens independent
of what else is in the batch, so a node that serves several requests at once
still gives the same tokens as one that serves this task alone.

The result hash has the same meaning as on the transformers backend: the
generated ids are cut and hashed by the same `finish_sequence`/`result_hash`.
The two backends are NOT promised to agree with each other (different kernels
and samplers): a node advertises its backend, and a group must share it.

Differences from the transformers backend, refused with InvalidArgsError rather
than silently changed: beam search (`num_beams` > 1), `typical_p` < 1 and 8-bit
quantization (vLLM quantizes bitsandbytes in flight only to 4 bits). Streaming
emits each choice's deltas when the request completes (the offline engine has
no per-token hook). One model is loaded at a time (vLLM reserves a fixed share
of the GPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import structlog

from helium.tasks.gpt import generation_overrides
from helium.v1 import gpt_pb2
from worker.device import DeviceInfo
from worker.errors import InvalidArgsError, ModelNotFoundError
from worker.executors.gpt._prompt import render_prompt
from worker.executors.gpt._transformers import Loaded, Prepared
from worker.models import CacheKey, ModelCache

__all__ = ["VllmBackend", "vllm_available"]

log = structlog.get_logger(__name__)

GPU_MEMORY_UTILIZATION = 0.85


def vllm_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


class VllmBackend:
    name = "vllm"

    def __init__(self, device: DeviceInfo, cache: ModelCache) -> None:
        if device.kind != "cuda":
            raise ValueError(f"the vllm backend needs a CUDA device, got {device.kind}")
        if not vllm_available():
            raise ValueError("the vllm backend needs the vllm package (pip install .[vllm])")
        # Must be set before vllm is first imported: it picks its kernels at import.
        os.environ["VLLM_BATCH_INVARIANT"] = "1"
        self.device, self.cache = device, cache

    def dtypes(self) -> tuple[str, ...]:
        import torch

        return ("auto", "float16", "float32") + (("bfloat16",) if torch.cuda.is_bf16_supported() else ())

    def quantize_bits(self) -> tuple[int, ...]:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            return ()
        return (4,)

    def load(self, task: gpt_pb2.GptTask) -> Loaded:
        dtype = task.dtype or "auto"
        if dtype not in self.dtypes():
            raise InvalidArgsError(f"dtype: {dtype} is not supported on device cuda ({self.device.card})")
        bits = task.quantize_bits if task.HasField("quantize_bits") else None
        if bits is not None and bits not in self.quantize_bits():
            raise InvalidArgsError(f"quantize_bits: {bits}-bit quantization is not supported by the vllm backend "
                                   f"on device cuda ({self.device.card}); vLLM quantizes bitsandbytes to 4 bits only")
        key = CacheKey(task.model, f"vllm/{dtype}/q{bits or 0}")
        # vLLM reserves a fixed share of the GPU: one engine at a time (its size is the whole budget).
        return self.cache.get_or_load(key, lambda: self._load(task.model, dtype, bits),
                                      size_of=lambda _: self.cache.budget_bytes,
                                      estimate=self.cache.budget_bytes, close=_close_engine)

    def prepare(self, task: gpt_pb2.GptTask, loaded: Loaded) -> Prepared:
        kwargs = generation_overrides(task)
        if kwargs.get("num_beams", 1) > 1:
            raise InvalidArgsError("generation_config.num_beams: beam search is not supported by the vllm backend")
        if kwargs.get("typical_p", 1.0) < 1.0:
            raise InvalidArgsError("generation_config.typical_p: typical sampling is not supported by the vllm backend")
        prompt_ids = render_prompt(loaded.tokenizer, task)
        if len(prompt_ids) >= loaded.context:
            raise InvalidArgsError(
                f"messages: the prompt is {len(prompt_ids)} tokens, longer than the model's context of "
                f"{loaded.context} tokens (at least one token must be left to generate)")
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], loaded.context - len(prompt_ids))
        kwargs["seed"] = task.seed
        n = kwargs.get("num_return_sequences", 1)
        return Prepared(loaded, prompt_ids, kwargs, n, streamable=False)

    def sampling_params(self, prep: Prepared):
        """vLLM SamplingParams: the model's own defaults (its generation_config), then the task's fields."""
        kw = dict(prep.kwargs)
        engine = prep.loaded.model
        params = engine.get_default_sampling_params()
        params.n = kw.get("num_return_sequences", 1)
        params.max_tokens = kw["max_new_tokens"]
        params.seed = kw["seed"]
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                             ("min_p", "min_p"), ("repetition_penalty", "repetition_penalty")):
            if ours in kw:
                setattr(params, theirs, kw[ours])
        if kw.get("do_sample") is False or kw.get("temperature") == 0:
            params.temperature = 0.0
        if "top_k" in kw and kw["top_k"] == 0:
            params.top_k = -1  # 0 means "no top-k", as in transformers
        params.stop = list(kw.get("stop_strings", ()))
        params.skip_special_tokens = True
        return params

    def generate(self, prep: Prepared, *, on_step: Callable | None, is_cancelled: Callable[[], bool]) -> list[list[int]]:
        from vllm.inputs import TokensPrompt

        engine = prep.loaded.model
        outputs = engine.generate([TokensPrompt(prompt_token_ids=prep.prompt_ids)], self.sampling_params(prep),
                                  use_tqdm=False)
        rows = [list(c.token_ids) for c in sorted(outputs[0].outputs, key=lambda c: c.index)]
        if on_step is not None:
            for i, ids in enumerate(rows):
                on_step(i, ids)
        return rows

    def _load(self, model_id: str, dtype: str, bits: int | None) -> Loaded:
        from vllm import LLM

        kwargs: dict = {"model": model_id, "dtype": dtype, "seed": 0, "enforce_eager": False,
                        "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, "tensor_parallel_size": 1}
        if bits == 4:
            kwargs["quantization"] = "bitsandbytes"
        try:
            engine = LLM(**kwargs)
        except (OSError, ValueError) as e:
            text = str(e)
            if isinstance(e, OSError) or "does not exist" in text or "not found" in text.lower() \
                    or "Repository Not Found" in text:
                raise ModelNotFoundError(model_id, f"{type(e).__name__}: {text.splitlines()[0] if text else ''}") from e
            raise
        tokenizer = engine.get_tokenizer()
        context = int(engine.llm_engine.model_config.max_model_len)
        eos = set()
        gen = getattr(engine.llm_engine.model_config, "hf_config", None)
        for source in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(source)
        log.info("gpt_model_loaded", model=model_id, dtype=dtype, quantize_bits=bits, context=context,
                 backend="vllm", batch_invariant=os.environ.get("VLLM_BATCH_INVARIANT"))
        return Loaded(engine, tokenizer, context, frozenset(eos))


def _close_engine(loaded: Loaded) -> None:
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception as e:  # noqa: BLE001 - best effort: the engine is dropped either way
        log.warning("vllm_shutdown_failed", error=f"{type(e).__name__}: {e}")
