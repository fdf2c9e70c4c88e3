from helium.v1 import admin_pb2 as _admin_pb2
from helium.v1 import worker_pb2 as _worker_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_EVENT_KIND_UNSPECIFIED: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_SNAPSHOT: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_STATE: _ClassVar[NodeEventKind]
    NODE_EVENT_KIND_QOS: _ClassVar[NodeEventKind]
NODE_EVENT_KIND_UNSPECIFIED: NodeEventKind
NODE_EVENT_KIND_SNAPSHOT: NodeEventKind
NODE_EVENT_KIND_STATE: NodeEventKind
NODE_EVENT_KIND_QOS: NodeEventKind

class NodeAuth(_message.Message):
    __slots__ = ("address", "timestamp", "signature")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    address: str
    timestamp: int
    signature: bytes
    def __init__(self, address: _Optional[str] = ..., timestamp: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetNodeStatusRequest(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ...) -> None: ...

class GetNodeStatusResponse(_message.Message):
    __slots__ = ("node", "reason")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node: _admin_pb2.Node
    reason: str
    def __init__(self, node: _Optional[_Union[_admin_pb2.Node, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchNodeEventsRequest(_message.Message):
    __slots__ = ("auth", "qos_step")
    AUTH_FIELD_NUMBER: _ClassVar[int]
    QOS_STEP_FIELD_NUMBER: _ClassVar[int]
    auth: NodeAuth
    qos_step: float
    def __init__(self, auth: _Optional[_Union[NodeAuth, _Mapping]] = ..., qos_step: _Optional[float] = ...) -> None: ...

class WatchNodeEventsResponse(_message.Message):
    __slots__ = ("kind", "node", "previous_state", "previous_qos", "reason", "at_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_QOS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    kind: NodeEventKind
    node: _admin_pb2.Node
    previous_state: _worker_pb2.NodeState
    previous_qos: float
    reason: str
    at_ms: int
    def __init__(self, kind: _Optional[_Union[NodeEventKind, str]] = ..., node: _Optional[_Union[_admin_pb2.Node, _Mapping]] = ..., previous_state: _Optional[_Union[_worker_pb2.NodeState, str]] = ..., previous_qos: _Optional[float] = ..., reason: _Optional[str] = ..., at_ms: _Optional[int] = ...) -> None: ...
