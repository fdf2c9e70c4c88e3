from helium.v1 import card_pb2 as _card_pb2
from helium.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_AVAILABLE: _ClassVar[NodeState]
    NODE_STATE_BUSY: _ClassVar[NodeState]
    NODE_STATE_PAUSED: _ClassVar[NodeState]
    NODE_STATE_PENDING_PAUSE: _ClassVar[NodeState]
    NODE_STATE_PENDING_QUIT: _ClassVar[NodeState]
    NODE_STATE_QUIT: _ClassVar[NodeState]
    NODE_STATE_KICKED_OUT: _ClassVar[NodeState]
    NODE_STATE_SLASHED: _ClassVar[NodeState]
    NODE_STATE_DISCONNECTED: _ClassVar[NodeState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_INVALID_ARGS: _ClassVar[ErrorKind]
    ERROR_KIND_OUT_OF_MEMORY: _ClassVar[ErrorKind]
    ERROR_KIND_CRASH: _ClassVar[ErrorKind]

class NodeAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_ACTION_UNSPECIFIED: _ClassVar[NodeAction]
    NODE_ACTION_PAUSE: _ClassVar[NodeAction]
    NODE_ACTION_RESUME: _ClassVar[NodeAction]
    NODE_ACTION_QUIT: _ClassVar[NodeAction]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_AVAILABLE: NodeState
NODE_STATE_BUSY: NodeState
NODE_STATE_PAUSED: NodeState
NODE_STATE_PENDING_PAUSE: NodeState
NODE_STATE_PENDING_QUIT: NodeState
NODE_STATE_QUIT: NodeState
NODE_STATE_KICKED_OUT: NodeState
NODE_STATE_SLASHED: NodeState
NODE_STATE_DISCONNECTED: NodeState
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_INVALID_ARGS: ErrorKind
ERROR_KIND_OUT_OF_MEMORY: ErrorKind
ERROR_KIND_CRASH: ErrorKind
NODE_ACTION_UNSPECIFIED: NodeAction
NODE_ACTION_PAUSE: NodeAction
NODE_ACTION_RESUME: NodeAction
NODE_ACTION_QUIT: NodeAction

class NodeInfo(_message.Message):
    __slots__ = ("address", "card", "free_vram_bytes", "backends", "loaded_models", "cached_models", "worker_version", "task_types", "dtypes", "quantize_bits", "device", "max_assignments")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    FREE_VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    WORKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_BITS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MAX_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    address: str
    card: _card_pb2.Card
    free_vram_bytes: int
    backends: _containers.RepeatedScalarFieldContainer[str]
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    cached_models: _containers.RepeatedScalarFieldContainer[str]
    worker_version: str
    task_types: _containers.RepeatedScalarFieldContainer[_task_pb2.TaskType]
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    quantize_bits: _containers.RepeatedScalarFieldContainer[int]
    device: str
    max_assignments: int
    def __init__(self, address: _Optional[str] = ..., card: _Optional[_Union[_card_pb2.Card, _Mapping]] = ..., free_vram_bytes: _Optional[int] = ..., backends: _Optional[_Iterable[str]] = ..., loaded_models: _Optional[_Iterable[str]] = ..., cached_models: _Optional[_Iterable[str]] = ..., worker_version: _Optional[str] = ..., task_types: _Optional[_Iterable[_Union[_task_pb2.TaskType, str]]] = ..., dtypes: _Optional[_Iterable[str]] = ..., quantize_bits: _Optional[_Iterable[int]] = ..., device: _Optional[str] = ..., max_assignments: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "register", "heartbeat", "started", "result", "error", "delta", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    register: Register
    heartbeat: Heartbeat
    started: Started
    result: Result
    error: ErrorReport
    delta: _task_pb2.TokenDelta
    batch: ConnectRequestBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., error: _Optional[_Union[ErrorReport, _Mapping]] = ..., delta: _Optional[_Union[_task_pb2.TokenDelta, _Mapping]] = ..., batch: _Optional[_Union[ConnectRequestBatch, _Mapping]] = ...) -> None: ...

class ConnectRequestBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ConnectRequest]
    def __init__(self, messages: _Optional[_Iterable[_Union[ConnectRequest, _Mapping]]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("challenge", "registered", "assignment", "ack", "cancel", "drain", "disconnect", "batch")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    challenge: Challenge
    registered: Registered
    assignment: WorkAssignment
    ack: Ack
    cancel: CancelAssignment
    drain: Drain
    disconnect: Disconnect
    batch: ConnectResponseBatch
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., registered: _Optional[_Union[Registered, _Mapping]] = ..., assignment: _Optional[_Union[WorkAssignment, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., cancel: _Optional[_Union[CancelAssignment, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., disconnect: _Optional[_Union[Disconnect, _Mapping]] = ..., batch: _Optional[_Union[ConnectResponseBatch, _Mapping]] = ...) -> None: ...

class ConnectResponseBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ConnectResponse]
    def __init__(self, messages: _Optional[_Iterable[_Union[ConnectResponse, _Mapping]]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("address", "worker_version", "accepts_batches")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    address: str
    worker_version: str
    accepts_batches: bool
    def __init__(self, address: _Optional[str] = ..., worker_version: _Optional[str] = ..., accepts_batches: _Optional[bool] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "coordinator", "chain_id", "verifying_contract")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFYING_CONTRACT_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    coordinator: str
    chain_id: int
    verifying_contract: str
    def __init__(self, nonce: _Optional[bytes] = ..., coordinator: _Optional[str] = ..., chain_id: _Optional[int] = ..., verifying_contract: _Optional[str] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("info", "signature")
    INFO_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    info: NodeInfo
    signature: bytes
    def __init__(self, info: _Optional[_Union[NodeInfo, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("address", "heartbeat_interval_ms", "relay_address", "state", "chain_id", "verifying_contract", "idle_heartbeat_interval_ms", "accepts_batches")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    RELAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFYING_CONTRACT_FIELD_NUMBER: _ClassVar[int]
    IDLE_HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    address: str
    heartbeat_interval_ms: int
    relay_address: str
    state: NodeState
    chain_id: int
    verifying_contract: str
    idle_heartbeat_interval_ms: int
    accepts_batches: bool
    def __init__(self, address: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., relay_address: _Optional[str] = ..., state: _Optional[_Union[NodeState, str]] = ..., chain_id: _Optional[int] = ..., verifying_contract: _Optional[str] = ..., idle_heartbeat_interval_ms: _Optional[int] = ..., accepts_batches: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("free_vram_bytes", "loaded_models", "running_assignments")
    FREE_VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    free_vram_bytes: int
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    running_assignments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, free_vram_bytes: _Optional[int] = ..., loaded_models: _Optional[_Iterable[str]] = ..., running_assignments: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkAssignment(_message.Message):
    __slots__ = ("assignment_id", "task_id", "type", "args", "lease_expires_at_ms", "deadline_ms", "grant", "stream_deltas")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    STREAM_DELTAS_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    task_id: str
    type: _task_pb2.TaskType
    args: _task_pb2.TaskArgs
    lease_expires_at_ms: int
    deadline_ms: int
    grant: _task_pb2.RelayGrant
    stream_deltas: bool
    def __init__(self, assignment_id: _Optional[str] = ..., task_id: _Optional[str] = ..., type: _Optional[_Union[_task_pb2.TaskType, str]] = ..., args: _Optional[_Union[_task_pb2.TaskArgs, _Mapping]] = ..., lease_expires_at_ms: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., grant: _Optional[_Union[_task_pb2.RelayGrant, _Mapping]] = ..., stream_deltas: _Optional[bool] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("assignment_id",)
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    def __init__(self, assignment_id: _Optional[str] = ...) -> None: ...

class ExecStats(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "images", "steps", "exec_ms", "exec_us")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    EXEC_MS_FIELD_NUMBER: _ClassVar[int]
    EXEC_US_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    images: int
    steps: int
    exec_ms: int
    exec_us: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., images: _Optional[int] = ..., steps: _Optional[int] = ..., exec_ms: _Optional[int] = ..., exec_us: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("assignment_id", "task_id", "result_hash", "signature", "inline_output", "output_slots", "stats", "phashes")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    INLINE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SLOTS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    PHASHES_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    task_id: str
    result_hash: bytes
    signature: bytes
    inline_output: bytes
    output_slots: _containers.RepeatedScalarFieldContainer[str]
    stats: ExecStats
    phashes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, assignment_id: _Optional[str] = ..., task_id: _Optional[str] = ..., result_hash: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., inline_output: _Optional[bytes] = ..., output_slots: _Optional[_Iterable[str]] = ..., stats: _Optional[_Union[ExecStats, _Mapping]] = ..., phashes: _Optional[_Iterable[int]] = ...) -> None: ...

class ErrorReport(_message.Message):
    __slots__ = ("assignment_id", "task_id", "kind", "message", "signature")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    task_id: str
    kind: ErrorKind
    message: str
    signature: bytes
    def __init__(self, assignment_id: _Optional[str] = ..., task_id: _Optional[str] = ..., kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("assignment_id",)
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    def __init__(self, assignment_id: _Optional[str] = ...) -> None: ...

class CancelAssignment(_message.Message):
    __slots__ = ("assignment_id", "task_id", "reason")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    task_id: str
    reason: str
    def __init__(self, assignment_id: _Optional[str] = ..., task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Disconnect(_message.Message):
    __slots__ = ("state", "reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    state: NodeState
    reason: str
    def __init__(self, state: _Optional[_Union[NodeState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ControlNodeRequest(_message.Message):
    __slots__ = ("address", "action", "timestamp", "signature")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    address: str
    action: NodeAction
    timestamp: int
    signature: bytes
    def __init__(self, address: _Optional[str] = ..., action: _Optional[_Union[NodeAction, str]] = ..., timestamp: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ControlNodeResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: NodeState
    def __init__(self, state: _Optional[_Union[NodeState, str]] = ...) -> None: ...
