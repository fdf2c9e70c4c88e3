"""Tiny SD models built once per session, and an executor that records every denoising step."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from worker.executors.base import Job
from worker.executors.sd import SdExecutor, SdExecutorConfig, StepEvent
from worker.tiny_sd import build_tiny_models


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and CI runs two pytest workers on two cores:
    one thread each avoids OpenMP oversubscription (restored after each test)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sd_models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-models")
    build_tiny_models(root)
    return root


class Recorder:
    def __init__(self) -> None:
        self.events: list[StepEvent] = []

    def __call__(self, event: StepEvent) -> None:
        self.events.append(event)

    def stage(self, stage: str) -> list[StepEvent]:
        return [e for e in self.events if e.stage == stage]


@pytest.fixture(scope="session")
def _session_executor(sd_models_dir):
    recorder = Recorder()
    ex = SdExecutor(SdExecutorConfig(models_dir=sd_models_dir), device="cpu", on_step=recorder)
    yield ex, recorder
    ex.close()


@pytest.fixture
def sd(_session_executor):
    """(run(doc) -> Outcome, recorder): one shared executor, so the model cache stays warm across tests."""
    from helium.tasks.sd import load_sd_task

    ex, recorder = _session_executor
    recorder.events.clear()

    def run(doc, **job_kwargs):
        recorder.events.clear()
        return ex.run(Job(task_id="0x" + "11" * 32, assignment_id="a1", spec=load_sd_task(doc), **job_kwargs))

    run.executor = ex
    return run, recorder


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = "png" if fmt == "PNG" else "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="session")
def stripes_url() -> str:
    """A conditioning image with strong edges (vertical stripes)."""
    a = np.zeros((64, 64, 3), dtype=np.uint8)
    a[:, ::16] = 255
    a[:, 1::16] = 255
    return data_url(Image.fromarray(a))


@pytest.fixture(scope="session")
def rings_url() -> str:
    """Another conditioning image, with different edges (rings)."""
    y, x = np.indices((64, 64))
    r = np.hypot(x - 32, y - 32).astype(int)
    a = np.where(r % 12 < 3, 255, 0).astype(np.uint8)
    return data_url(Image.fromarray(np.stack([a] * 3, -1)))
