"""The Stable Diffusion executor (task type "sd", backend "diffusers").

    SdExecutor(config=SdExecutorConfig(...), *, cache=None, device=None, on_step=None)

See `_executor` for what one run does, and `helium.tasks.sd` for the task schema.
"""

from worker.executors.sd._executor import SdExecutor, SdExecutorConfig, StepEvent

__all__ = ["SdExecutor", "SdExecutorConfig", "StepEvent"]
