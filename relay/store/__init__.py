"""Relay blob storage: the abstract contract and the filesystem backend."""

from relay.store._base import BlobInfo, BlobReader, BlobStore, BlobWriter, parse_sha256
from relay.store._filesystem import FilesystemBlobStore
from relay.store._names import canonical_slot, canonical_task_id, result_slot

__all__ = [
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "FilesystemBlobStore",
    "canonical_slot",
    "canonical_task_id",
    "parse_sha256",
    "result_slot",
]
