"""OpenAI image-generation parameters onto the SD task definition."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from coordinator.gateway._mapping import fresh_seed, refuse_unknown
from coordinator.gateway.errors import InvalidRequestError
from coordinator.gateway.protocol import ImageGenerationRequest
from helium.tasks import TaskArgsError
from helium.v1 import sd_pb2, task_pb2

__all__ = ["image_request_to_args", "image_task_document", "read_task_images"]

_PARAM_OF_FIELD = {
    "base_model": "model", "task_config.image_width": "size", "task_config.image_height": "size",
    "task_config.num_images": "n", "task_config.steps": "steps", "task_config.seed": "seed",
    "task_config.cfg": "cfg", "scheduler.method": "scheduler",
}


def _size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise InvalidRequestError(f"size must be WIDTHxHEIGHT, for example 512x512, got {size!r}",
                                  param="size") from None
    if not (64 <= w <= 2048 and 64 <= h <= 2048) or w % 8 or h % 8:
        raise InvalidRequestError(f"size must be multiples of 8 within 64..2048, got {size!r}", param="size")
    return w, h


def image_task_document(req: ImageGenerationRequest) -> dict[str, Any]:
    """The SD task JSON; without `seed`, a fresh random one (reported in the answer's `helium.seed`)."""
    refuse_unknown(req)
    for name in ("quality", "style"):
        if getattr(req, name) is not None:
            raise InvalidRequestError(f"{name} is not supported (use steps, cfg and negative_prompt)", param=name)
    if not req.model:
        raise InvalidRequestError("model is required (the Stable Diffusion model id)", param="model")
    w, h = _size(req.size)
    cfg: dict[str, Any] = {"image_width": w, "image_height": h, "num_images": req.n}
    for name in ("steps", "cfg"):
        if getattr(req, name) is not None:
            cfg[name] = getattr(req, name)
    cfg["seed"] = req.seed if req.seed is not None else fresh_seed()
    doc: dict[str, Any] = {"base_model": {"name": req.model}, "prompt": req.prompt, "task_config": cfg}
    if req.negative_prompt:
        doc["negative_prompt"] = req.negative_prompt
    if req.scheduler:
        doc["scheduler"] = {"method": req.scheduler}
    if req.dtype:
        doc["dtype"] = req.dtype
    return doc


def image_request_to_args(req: ImageGenerationRequest) -> task_pb2.TaskArgs:
    doc = image_task_document(req)
    try:
        try:
            from helium.tasks import sd as sd_tasks
        except ImportError:
            sd_tasks = None
        if sd_tasks is not None and hasattr(sd_tasks, "load_sd_task"):
            task = sd_tasks.load_sd_task(doc)
            if hasattr(sd_tasks, "validate_sd_task"):
                sd_tasks.validate_sd_task(task)
        else:
            task = json_format.ParseDict(doc, sd_pb2.SdTask())
    except TaskArgsError as exc:
        field = exc.field.removeprefix("args.").removeprefix("sd.")
        raise InvalidRequestError(str(exc), param=_PARAM_OF_FIELD.get(field, field)) from exc
    except json_format.ParseError as exc:
        raise InvalidRequestError(str(exc)) from exc
    return task_pb2.TaskArgs(sd=task)


async def read_task_images(channel, account, domain, task: task_pb2.Task, grant: task_pb2.RelayGrant) -> list[bytes]:
    """The validated task's PNGs, read from the relay under a matching node's result slots with the creator's
    grant; each is checked against the sha256 and the signed pHash in the validated manifest."""
    import hashlib
    import json

    from helium.tasks.results import phash64
    from relay.client import RelayClient

    manifest = json.loads(task.result.output_json or "{}").get("images") or []
    if not task.result.nodes:
        raise InvalidRequestError(f"task {task.task_id} has no matching node to read images from")
    node = task.result.nodes[0]
    relay = RelayClient(channel, account, domain)
    images = []
    for i, record in enumerate(manifest):
        index = int(record.get("index", i))
        data = await relay.get(task.task_id, f"result/{node}/{index}", grant=grant)
        if record.get("sha256") and hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ValueError(f"image {index} of task {task.task_id}: sha256 differs from the validated manifest")
        # The pHash the node signed, recomputed from the bytes returned (the sha256 is only the node's own word).
        if "phash" not in record or phash64(data) != int(record["phash"], 16):
            raise ValueError(f"image {index} of task {task.task_id}: its pHash is not the validated one")
        images.append(data)
    return images
