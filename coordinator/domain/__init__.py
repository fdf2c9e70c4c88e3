"""Coordinator domain objects: plain dataclasses, no protobuf, no SQL."""
