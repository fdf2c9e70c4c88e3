"""The relay: write-once blob store for task inputs and outputs, addressed by (task_id, slot).

Bundled in the coordinator (:func:`add_relay_to_server`) or standalone (``helium relay``).
"""

from relay.auth import (
    GET,
    PUT,
    RelayAuthenticator,
    build_auth,
    creator_grant_slots,
    make_grant,
    slot_allowed,
    worker_grant_slots,
)
from relay.client import RelayClient
from relay.config import RelayConfig, grpc_options
from relay.server import add_relay_to_server, serve_standalone, start_standalone
from relay.store import (
    BlobInfo,
    BlobStore,
    FilesystemBlobStore,
    canonical_slot,
    canonical_task_id,
    result_slot,
)

__all__ = [
    "GET",
    "PUT",
    "BlobInfo",
    "BlobStore",
    "FilesystemBlobStore",
    "RelayAuthenticator",
    "RelayClient",
    "RelayConfig",
    "add_relay_to_server",
    "build_auth",
    "canonical_slot",
    "canonical_task_id",
    "creator_grant_slots",
    "grpc_options",
    "make_grant",
    "result_slot",
    "serve_standalone",
    "slot_allowed",
    "start_standalone",
    "worker_grant_slots",
]
