from helium.v1 import card_pb2 as _card_pb2
from helium.v1 import task_pb2 as _task_pb2
from helium.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("address", "card", "state", "qos", "reliability", "mean_score", "scores", "worker_version", "loaded_models", "cached_models", "last_seen_ms", "running_tasks", "stake", "connected", "backends")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    WORKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CACHED_MODELS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    STAKE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    address: str
    card: _card_pb2.Card
    state: _worker_pb2.NodeState
    qos: float
    reliability: float
    mean_score: float
    scores: int
    worker_version: str
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    cached_models: _containers.RepeatedScalarFieldContainer[str]
    last_seen_ms: int
    running_tasks: _containers.RepeatedScalarFieldContainer[str]
    stake: str
    connected: bool
    backends: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[str] = ..., card: _Optional[_Union[_card_pb2.Card, _Mapping]] = ..., state: _Optional[_Union[_worker_pb2.NodeState, str]] = ..., qos: _Optional[float] = ..., reliability: _Optional[float] = ..., mean_score: _Optional[float] = ..., scores: _Optional[int] = ..., worker_version: _Optional[str] = ..., loaded_models: _Optional[_Iterable[str]] = ..., cached_models: _Optional[_Iterable[str]] = ..., last_seen_ms: _Optional[int] = ..., running_tasks: _Optional[_Iterable[str]] = ..., stake: _Optional[str] = ..., connected: _Optional[bool] = ..., backends: _Optional[_Iterable[str]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_worker_pb2.NodeState]
    def __init__(self, states: _Optional[_Iterable[_Union[_worker_pb2.NodeState, str]]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("states", "limit")
    STATES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_task_pb2.TaskState]
    limit: int
    def __init__(self, states: _Optional[_Iterable[_Union[_task_pb2.TaskState, str]]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Count(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("nodes_by_state", "nodes_by_card", "tasks_by_state", "queue_depth_by_type", "validation_outcomes", "gpus", "settled_batches", "chain")
    NODES_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    NODES_BY_CARD_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    nodes_by_state: _containers.RepeatedCompositeFieldContainer[Count]
    nodes_by_card: _containers.RepeatedCompositeFieldContainer[Count]
    tasks_by_state: _containers.RepeatedCompositeFieldContainer[Count]
    queue_depth_by_type: _containers.RepeatedCompositeFieldContainer[Count]
    validation_outcomes: _containers.RepeatedCompositeFieldContainer[Count]
    gpus: int
    settled_batches: int
    chain: ChainCounters
    def __init__(self, nodes_by_state: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., nodes_by_card: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., tasks_by_state: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., queue_depth_by_type: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., validation_outcomes: _Optional[_Iterable[_Union[Count, _Mapping]]] = ..., gpus: _Optional[int] = ..., settled_batches: _Optional[int] = ..., chain: _Optional[_Union[ChainCounters, _Mapping]] = ...) -> None: ...

class ChainCounters(_message.Message):
    __slots__ = ("nodes", "gpus", "tasks_settled", "slashes", "kick_outs", "fees_settled_wei", "slashed_total_wei")
    NODES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    TASKS_SETTLED_FIELD_NUMBER: _ClassVar[int]
    SLASHES_FIELD_NUMBER: _ClassVar[int]
    KICK_OUTS_FIELD_NUMBER: _ClassVar[int]
    FEES_SETTLED_WEI_FIELD_NUMBER: _ClassVar[int]
    SLASHED_TOTAL_WEI_FIELD_NUMBER: _ClassVar[int]
    nodes: int
    gpus: int
    tasks_settled: int
    slashes: int
    kick_outs: int
    fees_settled_wei: str
    slashed_total_wei: str
    def __init__(self, nodes: _Optional[int] = ..., gpus: _Optional[int] = ..., tasks_settled: _Optional[int] = ..., slashes: _Optional[int] = ..., kick_outs: _Optional[int] = ..., fees_settled_wei: _Optional[str] = ..., slashed_total_wei: _Optional[str] = ...) -> None: ...

class PauseNodeRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class PauseNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class ResumeNodeRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class ResumeNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class KickNodeRequest(_message.Message):
    __slots__ = ("address", "reason")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    address: str
    reason: str
    def __init__(self, address: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class KickNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
