from helium.v1 import card_pb2 as _card_pb2
from helium.v1 import gpt_pb2 as _gpt_pb2
from helium.v1 import sd_pb2 as _sd_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_GPT: _ClassVar[TaskType]
    TASK_TYPE_SD: _ClassVar[TaskType]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_DISPATCHED: _ClassVar[TaskState]
    TASK_STATE_VALIDATED: _ClassVar[TaskState]
    TASK_STATE_SETTLED: _ClassVar[TaskState]
    TASK_STATE_ABORTED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class AssignmentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSIGNMENT_STATE_UNSPECIFIED: _ClassVar[AssignmentState]
    ASSIGNMENT_STATE_LEASED: _ClassVar[AssignmentState]
    ASSIGNMENT_STATE_RUNNING: _ClassVar[AssignmentState]
    ASSIGNMENT_STATE_SUBMITTED: _ClassVar[AssignmentState]
    ASSIGNMENT_STATE_ERRORED: _ClassVar[AssignmentState]
    ASSIGNMENT_STATE_EXPIRED: _ClassVar[AssignmentState]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_GPT: TaskType
TASK_TYPE_SD: TaskType
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_DISPATCHED: TaskState
TASK_STATE_VALIDATED: TaskState
TASK_STATE_SETTLED: TaskState
TASK_STATE_ABORTED: TaskState
TASK_STATE_CANCELLED: TaskState
ASSIGNMENT_STATE_UNSPECIFIED: AssignmentState
ASSIGNMENT_STATE_LEASED: AssignmentState
ASSIGNMENT_STATE_RUNNING: AssignmentState
ASSIGNMENT_STATE_SUBMITTED: AssignmentState
ASSIGNMENT_STATE_ERRORED: AssignmentState
ASSIGNMENT_STATE_EXPIRED: AssignmentState

class TaskArgs(_message.Message):
    __slots__ = ("gpt", "sd")
    GPT_FIELD_NUMBER: _ClassVar[int]
    SD_FIELD_NUMBER: _ClassVar[int]
    gpt: _gpt_pb2.GptTask
    sd: _sd_pb2.SdTask
    def __init__(self, gpt: _Optional[_Union[_gpt_pb2.GptTask, _Mapping]] = ..., sd: _Optional[_Union[_sd_pb2.SdTask, _Mapping]] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("args", "creator", "nonce", "fee", "deadline", "signature", "stream_deltas")
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    STREAM_DELTAS_FIELD_NUMBER: _ClassVar[int]
    args: TaskArgs
    creator: str
    nonce: int
    fee: str
    deadline: int
    signature: bytes
    stream_deltas: bool
    def __init__(self, args: _Optional[_Union[TaskArgs, _Mapping]] = ..., creator: _Optional[str] = ..., nonce: _Optional[int] = ..., fee: _Optional[str] = ..., deadline: _Optional[int] = ..., signature: _Optional[bytes] = ..., stream_deltas: _Optional[bool] = ...) -> None: ...

class CreateTaskResponse(_message.Message):
    __slots__ = ("task_id", "grant")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    grant: RelayGrant
    def __init__(self, task_id: _Optional[str] = ..., grant: _Optional[_Union[RelayGrant, _Mapping]] = ...) -> None: ...

class CreateTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[CreateTaskRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[CreateTaskRequest, _Mapping]]] = ...) -> None: ...

class CreateTasksResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CreateTaskOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CreateTaskOutcome, _Mapping]]] = ...) -> None: ...

class CreateTaskOutcome(_message.Message):
    __slots__ = ("code", "message", "created")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    created: CreateTaskResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., created: _Optional[_Union[CreateTaskResponse, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id", "timestamp", "signature")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    timestamp: int
    signature: bytes
    def __init__(self, task_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id", "include_deltas", "timestamp", "signature")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELTAS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    include_deltas: bool
    timestamp: int
    signature: bytes
    def __init__(self, task_id: _Optional[str] = ..., include_deltas: _Optional[bool] = ..., timestamp: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("task", "delta")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    task: Task
    delta: TokenDelta
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., delta: _Optional[_Union[TokenDelta, _Mapping]] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("task_id", "node", "seq", "chunk_json")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHUNK_JSON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    node: str
    seq: int
    chunk_json: str
    def __init__(self, task_id: _Optional[str] = ..., node: _Optional[str] = ..., seq: _Optional[int] = ..., chunk_json: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id", "signature", "stop_running")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    STOP_RUNNING_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    signature: bytes
    stop_running: bool
    def __init__(self, task_id: _Optional[str] = ..., signature: _Optional[bytes] = ..., stop_running: _Optional[bool] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "type", "state", "creator", "nonce", "fee", "deadline", "args", "created_at_ms", "updated_at_ms", "assignments", "result", "reason", "settlement_tx")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_TX_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    type: TaskType
    state: TaskState
    creator: str
    nonce: int
    fee: str
    deadline: int
    args: TaskArgs
    created_at_ms: int
    updated_at_ms: int
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    result: TaskResult
    reason: str
    settlement_tx: str
    def __init__(self, task_id: _Optional[str] = ..., type: _Optional[_Union[TaskType, str]] = ..., state: _Optional[_Union[TaskState, str]] = ..., creator: _Optional[str] = ..., nonce: _Optional[int] = ..., fee: _Optional[str] = ..., deadline: _Optional[int] = ..., args: _Optional[_Union[TaskArgs, _Mapping]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., reason: _Optional[str] = ..., settlement_tx: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("assignment_id", "node", "state", "leased_at_ms", "lease_expires_at_ms", "result_hash", "submission_order", "matched", "error")
    ASSIGNMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LEASED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_HASH_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ORDER_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    assignment_id: str
    node: str
    state: AssignmentState
    leased_at_ms: int
    lease_expires_at_ms: int
    result_hash: bytes
    submission_order: int
    matched: bool
    error: str
    def __init__(self, assignment_id: _Optional[str] = ..., node: _Optional[str] = ..., state: _Optional[_Union[AssignmentState, str]] = ..., leased_at_ms: _Optional[int] = ..., lease_expires_at_ms: _Optional[int] = ..., result_hash: _Optional[bytes] = ..., submission_order: _Optional[int] = ..., matched: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("result_hash", "output_json", "nodes", "validation", "validated_at_ms")
    RESULT_HASH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    result_hash: bytes
    output_json: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    validation: str
    validated_at_ms: int
    def __init__(self, result_hash: _Optional[bytes] = ..., output_json: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., validation: _Optional[str] = ..., validated_at_ms: _Optional[int] = ...) -> None: ...

class RelayGrant(_message.Message):
    __slots__ = ("task_id", "grantee", "read_slots", "write_slots", "expires_at", "signature")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    READ_SLOTS_FIELD_NUMBER: _ClassVar[int]
    WRITE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    grantee: str
    read_slots: _containers.RepeatedScalarFieldContainer[str]
    write_slots: _containers.RepeatedScalarFieldContainer[str]
    expires_at: int
    signature: bytes
    def __init__(self, task_id: _Optional[str] = ..., grantee: _Optional[str] = ..., read_slots: _Optional[_Iterable[str]] = ..., write_slots: _Optional[_Iterable[str]] = ..., expires_at: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "type", "cards", "nodes", "loaded_nodes")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LOADED_NODES_FIELD_NUMBER: _ClassVar[int]
    model: str
    type: TaskType
    cards: _containers.RepeatedCompositeFieldContainer[_card_pb2.Card]
    nodes: int
    loaded_nodes: int
    def __init__(self, model: _Optional[str] = ..., type: _Optional[_Union[TaskType, str]] = ..., cards: _Optional[_Iterable[_Union[_card_pb2.Card, _Mapping]]] = ..., nodes: _Optional[int] = ..., loaded_nodes: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetNetworkInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetNetworkInfoResponse(_message.Message):
    __slots__ = ("chain_id", "verifying_contract", "coordinator", "min_fee", "version")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFYING_CONTRACT_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_FIELD_NUMBER: _ClassVar[int]
    MIN_FEE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    verifying_contract: str
    coordinator: str
    min_fee: str
    version: str
    def __init__(self, chain_id: _Optional[int] = ..., verifying_contract: _Optional[str] = ..., coordinator: _Optional[str] = ..., min_fee: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
