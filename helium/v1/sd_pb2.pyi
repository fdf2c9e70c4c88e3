from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SdTask(_message.Message):
    __slots__ = ("base_model", "prompt", "negative_prompt", "task_config", "lora", "controlnet", "vae", "textual_inversion", "refiner", "scheduler", "dtype")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_CONFIG_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    CONTROLNET_FIELD_NUMBER: _ClassVar[int]
    VAE_FIELD_NUMBER: _ClassVar[int]
    TEXTUAL_INVERSION_FIELD_NUMBER: _ClassVar[int]
    REFINER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    base_model: SdModel
    prompt: str
    negative_prompt: str
    task_config: SdTaskConfig
    lora: SdLora
    controlnet: SdControlNet
    vae: str
    textual_inversion: str
    refiner: SdRefiner
    scheduler: SdScheduler
    dtype: str
    def __init__(self, base_model: _Optional[_Union[SdModel, _Mapping]] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., task_config: _Optional[_Union[SdTaskConfig, _Mapping]] = ..., lora: _Optional[_Union[SdLora, _Mapping]] = ..., controlnet: _Optional[_Union[SdControlNet, _Mapping]] = ..., vae: _Optional[str] = ..., textual_inversion: _Optional[str] = ..., refiner: _Optional[_Union[SdRefiner, _Mapping]] = ..., scheduler: _Optional[_Union[SdScheduler, _Mapping]] = ..., dtype: _Optional[str] = ...) -> None: ...

class SdModel(_message.Message):
    __slots__ = ("name", "variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    variant: str
    def __init__(self, name: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class SdTaskConfig(_message.Message):
    __slots__ = ("image_width", "image_height", "steps", "seed", "num_images", "safety_checker", "cfg")
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    SAFETY_CHECKER_FIELD_NUMBER: _ClassVar[int]
    CFG_FIELD_NUMBER: _ClassVar[int]
    image_width: int
    image_height: int
    steps: int
    seed: int
    num_images: int
    safety_checker: bool
    cfg: float
    def __init__(self, image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., steps: _Optional[int] = ..., seed: _Optional[int] = ..., num_images: _Optional[int] = ..., safety_checker: _Optional[bool] = ..., cfg: _Optional[float] = ...) -> None: ...

class SdLora(_message.Message):
    __slots__ = ("model", "weight_file_name", "weight")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    weight_file_name: str
    weight: float
    def __init__(self, model: _Optional[str] = ..., weight_file_name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SdControlNet(_message.Message):
    __slots__ = ("model", "image_dataurl", "weight", "preprocess")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DATAURL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_FIELD_NUMBER: _ClassVar[int]
    model: str
    image_dataurl: str
    weight: float
    preprocess: SdPreprocess
    def __init__(self, model: _Optional[str] = ..., image_dataurl: _Optional[str] = ..., weight: _Optional[float] = ..., preprocess: _Optional[_Union[SdPreprocess, _Mapping]] = ...) -> None: ...

class SdPreprocess(_message.Message):
    __slots__ = ("method", "args")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    method: str
    args: _struct_pb2.Struct
    def __init__(self, method: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SdRefiner(_message.Message):
    __slots__ = ("model", "denoising_cutoff", "steps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DENOISING_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    denoising_cutoff: float
    steps: int
    def __init__(self, model: _Optional[str] = ..., denoising_cutoff: _Optional[float] = ..., steps: _Optional[int] = ...) -> None: ...

class SdScheduler(_message.Message):
    __slots__ = ("method", "args")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    method: str
    args: _struct_pb2.Struct
    def __init__(self, method: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
