from helium.v1 import task_pb2 as _task_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RelayAuth(_message.Message):
    __slots__ = ("address", "timestamp", "nonce", "signature", "grant")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    address: str
    timestamp: int
    nonce: str
    signature: bytes
    grant: _task_pb2.RelayGrant
    def __init__(self, address: _Optional[str] = ..., timestamp: _Optional[int] = ..., nonce: _Optional[str] = ..., signature: _Optional[bytes] = ..., grant: _Optional[_Union[_task_pb2.RelayGrant, _Mapping]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PutHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[PutHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PutHeader(_message.Message):
    __slots__ = ("task_id", "slot", "sha256", "size", "auth")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    slot: str
    sha256: str
    size: int
    auth: RelayAuth
    def __init__(self, task_id: _Optional[str] = ..., slot: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., auth: _Optional[_Union[RelayAuth, _Mapping]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("task_id", "slot", "auth")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    slot: str
    auth: RelayAuth
    def __init__(self, task_id: _Optional[str] = ..., slot: _Optional[str] = ..., auth: _Optional[_Union[RelayAuth, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: BlobInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[BlobInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class BlobInfo(_message.Message):
    __slots__ = ("sha256", "size")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size: int
    def __init__(self, sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...
