"""Tiny random-weight Stable Diffusion models, built on the spot.

Tests, benchmarks and `helium dev` need SD models without a model hub. Each
builder here makes random-weight modules from tiny configs (a UNet, a VAE, CLIP
text encoders and a byte-level CLIP tokenizer with a ~500-token vocabulary),
and writes them with `save_pretrained` in the same layout as a real model on
the hub, so the executor loads them through its ordinary loading code.

Everything is deterministic: the same `kind` and `seed` give byte-identical
weights, on any machine. A model builds in well under a second.

    build_tiny_sd(kind, dest, seed=0) -> Path     one model of `kind` under dest
    build_tiny_models(root, seed=0) -> dict       every kind, under root/TINY_NAMES[kind]

Kinds: sd15, sdxl, sdxl-refiner, controlnet, controlnet-xl, lora, lora-xl, vae,
textual-inversion, sd15-safety (with a safety checker that flags every image),
sd15-100m (a ~100M-parameter UNet, for benchmarks), sd15-shape (SD 1.5's shapes: a ~1B-parameter
UNet, a 768-wide text encoder and a full VAE, random weights, for the GPU check; it builds in tens of seconds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = [
    "KINDS",
    "TI_TOKEN",
    "TINY_LORA_FILE",
    "TINY_NAMES",
    "build_tiny_models",
    "build_tiny_sd",
    "install_tiny_sd_into_hf_cache",
]

# The model names `build_tiny_models` uses under its root (a task's `base_model.name` etc.).
TINY_NAMES: dict[str, str] = {
    "sd15": "helium-tiny/sd15",
    "sdxl": "helium-tiny/sdxl",
    "sdxl-refiner": "helium-tiny/sdxl-refiner",
    "controlnet": "helium-tiny/controlnet",
    "controlnet-xl": "helium-tiny/controlnet-xl",
    "lora": "helium-tiny/lora",
    "lora-xl": "helium-tiny/lora-xl",
    "vae": "helium-tiny/vae",
    "textual-inversion": "helium-tiny/textual-inversion",
    "sd15-safety": "helium-tiny/sd15-safety",
    "sd15-100m": "helium-tiny/sd15-100m",
    "sd15-shape": "helium-tiny/sd15-shape",
}
KINDS = tuple(TINY_NAMES)
TINY_LORA_FILE = "lora.safetensors"
# The token the tiny textual-inversion embedding teaches.
TI_TOKEN = "<helium-tiny>"

_HIDDEN = 32  # CLIP hidden size (and projection size) of the tiny text encoders


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _byte_chars() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable character per byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _tokenizer():
    from transformers import CLIPTokenizer

    chars = _byte_chars()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    return tok


def _text_config(tok, *, projection: bool, hidden: int = _HIDDEN, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden if hidden == _HIDDEN else 4 * hidden,
        num_attention_heads=heads,
        num_hidden_layers=layers,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        hidden_act="gelu",
    )


def _vae(channels: tuple[int, ...] = (8, 16), *, groups: int = 4, layers: int = 1):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        latent_channels=4,
        norm_num_groups=groups,
        layers_per_block=layers,
        sample_size=64,
    )


def _scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def _unet_sd15(channels=(16, 32), layers=1, heads=4, *, cross: int = _HIDDEN, groups: int = 4):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=channels,
        layers_per_block=layers,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cross,
        attention_head_dim=heads,
        norm_num_groups=groups,
    )


def _xl_unet_kwargs(*, refiner: bool) -> dict:
    # SDXL: added "text_time" conditioning = pooled text embeds + Fourier-embedded time ids
    # (6 ids for the base, 5 with the aesthetic score for the refiner).
    n_ids = 5 if refiner else 6
    return dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=n_ids * 8 + _HIDDEN,
        cross_attention_dim=_HIDDEN if refiner else 2 * _HIDDEN,
        norm_num_groups=4,
    )


def _unet_xl(*, refiner: bool):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**_xl_unet_kwargs(refiner=refiner))


def _build_sd15(dest: Path, *, big: bool = False, safety: bool = False) -> None:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    tok = _tokenizer()
    unet = _unet_sd15((128, 256, 512), layers=2, heads=8) if big else _unet_sd15()
    checker, processor = _safety_checker() if safety else (None, None)
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tok, projection=False)),
        tokenizer=tok,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=safety,
    )
    pipe.save_pretrained(dest)


def _safety_checker():
    """A tiny safety checker whose concept thresholds flag every image (so the switch is visible)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(
        text_config={"hidden_size": _HIDDEN, "intermediate_size": 64, "num_attention_heads": 4,
                     "num_hidden_layers": 1, "vocab_size": 99,
                     "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
        vision_config={"hidden_size": _HIDDEN, "intermediate_size": 64, "num_attention_heads": 4,
                       "num_hidden_layers": 1, "image_size": 32, "patch_size": 8},
        projection_dim=_HIDDEN,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
        checker.special_care_embeds_weights.fill_(-2.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor


def _build_sdxl(dest: Path) -> None:
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok = _tokenizer()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tok, projection=False)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tok, projection=True)),
        tokenizer=tok,
        tokenizer_2=_tokenizer(),
        unet=_unet_xl(refiner=False),
        scheduler=_scheduler(),
        add_watermarker=False,
    )
    pipe.save_pretrained(dest)


def _build_sdxl_refiner(dest: Path) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    tok = _tokenizer()
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tok, projection=True)),
        tokenizer=None,
        tokenizer_2=tok,
        unet=_unet_xl(refiner=True),
        scheduler=_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    pipe.save_pretrained(dest)


def _unzero(module: torch.nn.Module) -> None:
    """ControlNet output convs start at zero (so a fresh ControlNet is a no-op); give them weights."""
    for name, p in module.named_parameters():
        if ("controlnet_down_blocks" in name or "controlnet_mid_block" in name
                or "conv_out" in name) and torch.count_nonzero(p) == 0:
            with torch.no_grad():
                p.normal_(0.0, 0.5)


def _build_controlnet(dest: Path, *, xl: bool) -> None:
    from diffusers import ControlNetModel

    kwargs = _xl_unet_kwargs(refiner=False) if xl else dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    for k in ("sample_size", "in_channels", "out_channels", "up_block_types"):
        kwargs.pop(k, None)
    # The conditioning image is downsampled 2x per extra block: 2x, the tiny VAE's scale factor.
    cn = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(8, 16), **kwargs)
    _unzero(cn)
    cn.save_pretrained(dest)


def _build_lora(dest: Path, *, xl: bool) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = _unet_xl(refiner=False) if xl else _unet_sd15()
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.5)
    layers = get_peft_model_state_dict(unet)
    pipe_cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    dest.mkdir(parents=True, exist_ok=True)
    pipe_cls.save_lora_weights(dest, unet_lora_layers=layers, weight_name=TINY_LORA_FILE)


def _build_textual_inversion(dest: Path) -> None:
    from safetensors.torch import save_file

    dest.mkdir(parents=True, exist_ok=True)
    save_file({TI_TOKEN: torch.randn(1, _HIDDEN)}, str(dest / "learned_embeds.safetensors"))


def _build_vae(dest: Path) -> None:
    vae = _vae()
    with torch.no_grad():  # a VAE clearly unlike the pipelines' own
        for p in vae.decoder.conv_out.parameters():
            p.normal_(0.0, 0.3)
    vae.save_pretrained(dest)


def _build_sd15_shape(dest: Path) -> None:
    """SD 1.5's shapes with random weights: UNet (320, 640, 1280, 1280) x 2 layers, 768-wide CLIP text encoder
    of 12 layers, the full VAE. What matters on a card is the work per step, not what the weights say."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    tok = _tokenizer()
    unet = _unet_sd15((320, 640, 1280, 1280), layers=2, heads=8, cross=768, groups=32)
    pipe = StableDiffusionPipeline(
        vae=_vae((128, 256, 512, 512), groups=32, layers=2),
        text_encoder=CLIPTextModel(_text_config(tok, projection=False, hidden=768, layers=12, heads=12)),
        tokenizer=tok, unet=unet, scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dest)


_BUILDERS = {
    "sd15": lambda d: _build_sd15(d),
    "sd15-100m": lambda d: _build_sd15(d, big=True),
    "sd15-shape": _build_sd15_shape,
    "sd15-safety": lambda d: _build_sd15(d, safety=True),
    "sdxl": _build_sdxl,
    "sdxl-refiner": _build_sdxl_refiner,
    "controlnet": lambda d: _build_controlnet(d, xl=False),
    "controlnet-xl": lambda d: _build_controlnet(d, xl=True),
    "lora": lambda d: _build_lora(d, xl=False),
    "lora-xl": lambda d: _build_lora(d, xl=True),
    "vae": _build_vae,
    "textual-inversion": _build_textual_inversion,
}


def build_tiny_sd(kind: str, dest: str | Path, *, seed: int = 0) -> Path:
    """Build one tiny model of `kind` into the directory `dest` (created) and return it."""
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    dest = Path(dest)
    with _seeded(seed):
        _BUILDERS[kind](dest)
    return dest


def build_tiny_models(root: str | Path, *, seed: int = 0, kinds: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build the tiny models under `root`, each at `root / TINY_NAMES[kind]`; skip those already there.

    Returns kind -> directory. `kinds` defaults to every kind except the two large ones (sd15-100m, sd15-shape).
    """
    root = Path(root)
    out: dict[str, Path] = {}
    for kind in kinds or tuple(k for k in KINDS if k not in ("sd15-100m", "sd15-shape")):
        dest = root / TINY_NAMES[kind]
        if not dest.exists():
            build_tiny_sd(kind, dest, seed=seed)
        out[kind] = dest
    return out


def install_tiny_sd_into_hf_cache(kind: str, cache_dir: str | Path, *, repo_id: str | None = None,
                                  seed: int = 0) -> str:  # fmt: skip
    """Puts tiny pipeline `kind` into a Hugging Face hub cache (snapshot + refs/main), so a worker lists it
    as cached and loads it by `repo_id` offline, like a downloaded model. Returns the repo id."""
    import shutil

    repo_id = repo_id or f"helium/tiny-{kind}"
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    revision = f"{seed:040x}"
    snapshot = repo / "snapshots" / revision
    if not snapshot.exists():
        tmp = repo / "building"
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_sd(kind, tmp, seed=seed)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo_id
