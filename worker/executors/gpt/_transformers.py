"""The `transformers` backend: CPU, CUDA and Apple MPS.

Loading is the real `from_pretrained` path (a hub id or a local directory;
`local_files_only` when `HF_HUB_OFFLINE` is set), whole model on the one device
(no CPU or disk offload), bitsandbytes for `quantize_bits`. Loaded models stay
in the shared `ModelCache`.

Generation is one `model.generate` call. The effective config is resolved once
per task, in `prepare`: a copy of the model's own `generation_config` with the
task's fields over it (the cached model's config is never read by generate() nor
written). Sampling without beams draws from a `torch.Generator` of the task's
own, seeded with the task's seed (`_SeededSampler`): generate() runs greedy over
the sampler's one-hot choice, so no other thread drawing from the process-wide
generator (a model load, a capabilities probe, another node of the process) can
change a token. A `StoppingCriteria` is the per-step hook for stop strings,
streaming and cancellation.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from helium.tasks.gpt import generation_overrides
from helium.v1 import gpt_pb2
from worker.device import DeviceInfo, quantization_refusal, supported_dtypes, supported_quantize_bits
from worker.errors import InvalidArgsError, ModelNotFoundError
from worker.executors.gpt._prompt import render_prompt
from worker.models import CacheKey, ModelCache

__all__ = ["Loaded", "Prepared", "TransformersBackend"]

log = structlog.get_logger(__name__)

StepHook = Callable[[int, list[int]], None]


@dataclass(frozen=True)
class Loaded:
    model: object
    tokenizer: object
    context: int  # max positions (prompt + generated)
    eos_ids: frozenset[int]


@dataclass(frozen=True)
class Prepared:
    """A task ready to generate: its model, prompt ids and the generate() arguments."""

    loaded: Loaded
    prompt_ids: list[int]
    kwargs: dict
    n: int  # number of choices
    streamable: bool  # rows of the batch are the choices, step by step (no beam search)
    config: object = None  # the effective GenerationConfig: a copy of the model's, the task's fields over it
    seed: int = 0

    @property
    def max_new_tokens(self) -> int:
        return self.kwargs["max_new_tokens"]

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return tuple(self.kwargs.get("stop_strings", ()))

    def decode(self, ids) -> str:
        return self.loaded.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


class TransformersBackend:
    name = "transformers"

    def __init__(self, device: DeviceInfo, cache: ModelCache) -> None:
        self.device, self.cache = device, cache

    def quantize_bits(self) -> tuple[int, ...]:
        return supported_quantize_bits(self.device.torch_device)

    def load(self, task: gpt_pb2.GptTask) -> Loaded:
        dtype = task.dtype or "auto"
        if dtype not in supported_dtypes(self.device.torch_device):
            raise InvalidArgsError(f"dtype: {dtype} is not supported on device {self.device.kind} ({self.device.card})")
        bits = task.quantize_bits if task.HasField("quantize_bits") else None
        if bits is not None and bits not in self.quantize_bits():
            why = quantization_refusal(self.device.kind, bits) or "the installed bitsandbytes cannot run it here"
            raise InvalidArgsError(
                f"quantize_bits: {bits}-bit quantization is not supported on device {self.device.kind} "
                f"({self.device.card}): {why}")
        key = CacheKey(task.model, f"{self.device.torch_device}/{dtype}/q{bits or 0}")

        hit = self.cache.get(key)
        if hit is not None:
            return hit

        def load() -> Loaded:
            return self.cache.get_or_load(key, lambda: self._load(task.model, dtype, bits),
                                          size_of=lambda b: b.model.get_memory_footprint(),
                                          estimate=_weights_bytes(task.model, bits))

        import torch

        try:
            return load()
        except torch.OutOfMemoryError:
            if not self.cache.keys():
                raise
            # The budget is an estimate; free every other model and try once more before giving up.
            log.warning("gpt_load_oom_retry", model=task.model, evicting=len(self.cache.keys()))
            self.cache.clear()
            return load()

    def prepare(self, task: gpt_pb2.GptTask, loaded: Loaded) -> Prepared:
        prompt_ids = render_prompt(loaded.tokenizer, task)
        if len(prompt_ids) >= loaded.context:
            raise InvalidArgsError(
                f"messages: the prompt is {len(prompt_ids)} tokens, longer than the model's context of "
                f"{loaded.context} tokens (at least one token must be left to generate)")
        kwargs = generation_overrides(task)
        # Tokens past the context cannot be generated; the choice then ends with "length".
        kwargs["max_new_tokens"] = min(kwargs["max_new_tokens"], loaded.context - len(prompt_ids))
        base = loaded.model.generation_config
        do_sample = kwargs.get("do_sample", base.do_sample)
        if do_sample and kwargs.get("temperature", base.temperature) == 0:
            # temperature 0 means greedy (as in the OpenAI API); transformers would refuse it.
            kwargs["do_sample"], do_sample = False, False
            kwargs.pop("temperature", None)
        beams = kwargs.get("num_beams", base.num_beams or 1)
        n = kwargs.get("num_return_sequences", base.num_return_sequences or 1)
        if n > 1 and beams == 1 and not do_sample:
            raise InvalidArgsError(
                f"generation_config.num_return_sequences must be 1 with greedy decoding (do_sample false, "
                f"num_beams 1), got {n}")
        if beams > 1 and n > beams:
            raise InvalidArgsError(
                f"generation_config.num_return_sequences must be <= num_beams ({beams}) when beams are used, got {n}")
        # Resolved once, on a copy: what a cached model carries never changes from one task to the next.
        gen = copy.deepcopy(base)
        try:
            gen.update(**{k: v for k, v in kwargs.items() if k != "stop_strings"})
        except ValueError as e:
            raise InvalidArgsError(f"generation_config: {str(e).splitlines()[0]}") from e
        return Prepared(loaded, prompt_ids, kwargs, n, streamable=beams == 1, config=gen, seed=int(task.seed))

    def generate(self, prep: Prepared, *, on_step: StepHook | None, is_cancelled: Callable[[], bool]) -> list[list[int]]:
        """Raw generated ids per choice (pad tokens after an end included)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        model = prep.loaded.model
        ids = torch.tensor([prep.prompt_ids], dtype=torch.long, device=self.device.torch_device)
        stops = prep.stop_strings
        hook = _StepCriteria(len(prep.prompt_ids), on_step if prep.streamable else None, is_cancelled,
                             stops, prep.decode)
        gen = copy.deepcopy(prep.config)
        gen.max_new_tokens = prep.max_new_tokens
        processors = LogitsProcessorList()
        if gen.do_sample and (gen.num_beams or 1) == 1:
            # One row per choice, sampled by the task's own generator; generate() takes the sampler's pick.
            processors.append(_SeededSampler(_warpers(gen), prep.seed, self.device.torch_device))
            ids = ids.repeat(prep.n, 1)
            gen.do_sample, gen.num_return_sequences = False, 1
            gen.temperature = gen.top_k = gen.top_p = gen.min_p = gen.typical_p = None
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen,
                             logits_processor=processors, stopping_criteria=StoppingCriteriaList([hook]))
        return [row[len(prep.prompt_ids):].tolist() for row in out]

    def _load(self, model_id: str, dtype: str, bits: int | None) -> Loaded:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        local = _local_files_only()
        try:
            config = AutoConfig.from_pretrained(model_id, local_files_only=local)
            tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=local)
        except (OSError, ValueError) as e:  # hub errors are OSErrors; HFValidationError is a ValueError
            raise ModelNotFoundError(model_id, _short(e)) from e
        kwargs: dict = {"local_files_only": local, "dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        if bits is not None:
            from transformers import BitsAndBytesConfig

            compute = torch.float32 if dtype in ("auto", "float32") else getattr(torch, dtype)
            kwargs["quantization_config"] = (
                BitsAndBytesConfig(load_in_8bit=True) if bits == 8
                else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute))
            kwargs["device_map"] = {"": self.device.torch_device}  # one device: never offload
        try:
            model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):
                raise InvalidArgsError(f"model: {model_id} is not a causal language model ({_short(e)})") from e
            raise
        except OSError as e:
            raise ModelNotFoundError(model_id, _short(e)) from e
        if bits is None:
            model = model.to(self.device.torch_device)
        model.eval()
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        context = next((getattr(text, a) for a in ("max_position_embeddings", "n_positions", "max_sequence_length",
                                                    "seq_length") if getattr(text, a, None)), None)
        if context is None:
            context = tokenizer.model_max_length if tokenizer.model_max_length < 10**8 else 2048
        eos = model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        log.info("gpt_model_loaded", model=model_id, dtype=dtype, quantize_bits=bits, context=context,
                 device=self.device.torch_device)
        return Loaded(model, tokenizer, int(context), frozenset(eos_ids))


def _warpers(gen) -> list:
    """transformers' sampling warpers for this config, in the order generate() itself applies them."""
    from transformers import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    out: list = []
    if gen.temperature is not None and gen.temperature != 1.0:
        out.append(TemperatureLogitsWarper(gen.temperature))
    if gen.top_k is not None and gen.top_k != 0:
        out.append(TopKLogitsWarper(top_k=gen.top_k, min_tokens_to_keep=1))
    if gen.top_p is not None and gen.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=gen.top_p, min_tokens_to_keep=1))
    if gen.min_p is not None:
        out.append(MinPLogitsWarper(min_p=gen.min_p, min_tokens_to_keep=1))
    if gen.typical_p is not None and gen.typical_p < 1.0:
        out.append(TypicalLogitsWarper(mass=gen.typical_p, min_tokens_to_keep=1))
    return out


class _SeededSampler:
    """The last logits processor of a sampled task: warps the scores, draws each row's next token from the
    task's own generator, and leaves only that token (generate() then decodes greedily)."""

    def __init__(self, warpers: list, seed: int, device: str) -> None:
        import torch

        self.warpers = warpers
        self.generator = torch.Generator(device=device).manual_seed(seed % 2**64)

    def __call__(self, input_ids, scores):
        import torch

        for w in self.warpers:
            scores = w(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        pick = torch.multinomial(probs, num_samples=1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)


class _StepCriteria:
    """The per-step hook: stop strings, streaming, cancellation.

    A row stops once its decoded new text contains a stop string: the same
    decode that `finish_sequence` cuts with, so where generation stops and where
    the choice is cut always agree (transformers' own StopStringCriteria works on
    token strings and can disagree with the decoded text on byte-level vocabularies).
    """

    def __init__(self, prompt_len: int, on_step: StepHook | None, is_cancelled: Callable[[], bool],
                 stop_strings: tuple[str, ...], decode: Callable) -> None:
        self.prompt_len, self.on_step, self.is_cancelled = prompt_len, on_step, is_cancelled
        self.stop_strings, self.decode = stop_strings, decode
        self.cancelled = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows = input_ids.shape[0]
        new = [input_ids[row, self.prompt_len:].tolist() for row in range(rows)] \
            if self.on_step is not None or self.stop_strings else None
        if self.on_step is not None:
            for row in range(rows):
                self.on_step(row, new[row])
        self.cancelled = self.cancelled or bool(self.is_cancelled())
        done = [self.cancelled] * rows
        if self.stop_strings and not self.cancelled:
            for row in range(rows):
                text = self.decode(new[row])
                done[row] = any(s in text for s in self.stop_strings)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _local_files_only() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _weights_bytes(model_id: str, bits: int | None) -> int:
    """A size estimate before loading: the weight files on disk (local dir or HF cache), scaled for quantization."""
    path = Path(model_id)
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model_id, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached: no estimate
            return 0
    size = sum(f.stat().st_size for f in path.glob("*.safetensors")) or sum(f.stat().st_size for f in path.glob("*.bin"))
    return size // {None: 1, 8: 2, 4: 4}[bits]


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
