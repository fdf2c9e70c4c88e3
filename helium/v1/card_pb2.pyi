from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Card(_message.Message):
    __slots__ = ("name", "vram_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    vram_bytes: int
    def __init__(self, name: _Optional[str] = ..., vram_bytes: _Optional[int] = ...) -> None: ...
