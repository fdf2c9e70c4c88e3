"""Durable coordinator state behind one abstract class, with SQLite and in-memory
implementations that pass the same test suite."""

from coordinator.store.base import CoordinatorStore
from coordinator.store.memory import MemoryStore
from coordinator.store.sqlite import SqliteStore

__all__ = ["CoordinatorStore", "MemoryStore", "SqliteStore"]
