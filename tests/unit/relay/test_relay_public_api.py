"""Pins the relay's public names, so a change to them is a deliberate one."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import grpc

from relay import errors

REPO = Path(__file__).resolve().parents[3]

PUBLIC = {
    "relay": [
        "GET", "PUT", "BlobInfo", "BlobStore", "FilesystemBlobStore", "RelayAuthenticator", "RelayClient",
        "RelayConfig", "add_relay_to_server", "build_auth", "canonical_slot", "canonical_task_id",
        "creator_grant_slots", "grpc_options", "make_grant", "result_slot", "serve_standalone", "slot_allowed",
        "start_standalone", "worker_grant_slots",
    ],
    "relay.store": [
        "BlobInfo", "BlobReader", "BlobStore", "BlobWriter", "FilesystemBlobStore", "canonical_slot",
        "canonical_task_id", "parse_sha256", "result_slot",
    ],
    "relay.errors": [
        "AuthenticationError", "BlobExistsError", "BlobNotFoundError", "ContentMismatchError", "InvalidRequestError",
        "InvalidSlotError", "PermissionDeniedError", "RelayError", "RelayUnavailableError", "ResourceLimitError",
        "StorageFullError", "error_from_status", "status_of",
    ],
}  # fmt: skip


def _load(name: str):
    if name == "relay":  # load the file itself: works whether or not `relay` is installed as a regular package
        spec = importlib.util.spec_from_file_location("relay_public_face", REPO / "relay" / "__init__.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


def test_public_names_are_pinned() -> None:
    for name, expected in PUBLIC.items():
        module = _load(name)
        assert sorted(module.__all__) == sorted(expected), name
        assert all(hasattr(module, n) for n in expected), name


def test_every_error_carries_its_status_and_maps_back() -> None:
    codes = {
        errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
        errors.InvalidSlotError: grpc.StatusCode.INVALID_ARGUMENT,
        errors.ContentMismatchError: grpc.StatusCode.INVALID_ARGUMENT,
        errors.AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
        errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
        errors.BlobNotFoundError: grpc.StatusCode.NOT_FOUND,
        errors.BlobExistsError: grpc.StatusCode.ALREADY_EXISTS,
        errors.ResourceLimitError: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.RelayUnavailableError: grpc.StatusCode.UNAVAILABLE,
    }
    for cls, code in codes.items():
        assert cls.code == code and issubclass(cls, errors.RelayError)
        assert errors.status_of(cls("the message")) == (code, "the message")
        back = errors.error_from_status(code, "details")
        assert back.code == code and "details" in str(back)
    assert errors.status_of(KeyError("secret")) == (grpc.StatusCode.INTERNAL, "internal relay error")
    assert errors.error_from_status(grpc.StatusCode.UNAVAILABLE, "down").retryable
