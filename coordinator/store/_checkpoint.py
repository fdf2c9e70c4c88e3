"""WAL checkpoints on a thread of their own, so the event loop seldom runs one.

SQLite checkpoints a WAL database from inside the COMMIT that grows the log past `wal_autocheckpoint`
pages: that commit copies the log into the database file and fsyncs it, on the caller's thread. For the
coordinator that is the event loop, and every stream stalls for those milliseconds. With group commit on,
this thread runs a PASSIVE checkpoint on its own connection every `interval_s`: it never waits for the
writer and the writer never waits for it, and SQLite releases the GIL while it copies and syncs.

A checkpoint running beside the writer cannot rewind the log, though: SQLite starts the log over only
when a write transaction begins while every frame in it has been copied, and under load the writer has
always appended a few more by then (a sustained dispatch bench grew the log past 1 GB). So the writer
keeps an automatic checkpoint at `WAL_RESET_PAGES` (16 MiB of log, 4x SQLite's default): by then this
thread has copied nearly everything, so the writer's own checkpoint copies a few pages, completes, and
the next transaction starts the log over. Durability is unchanged: a commit is durable (against a
process crash) once it is in the log, whoever copies it on later.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

__all__ = ["WAL_RESET_PAGES", "WalCheckpointer"]

log = structlog.get_logger("coordinator.store")

WAL_RESET_PAGES = 4000  # the writer's own checkpoint, which lets the log start over (SQLite's default: 1000)


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on `path` every `interval_s` until `close()`."""

    def __init__(self, path: Path, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.runs = 0
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=1000")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.checkpoint()

    def checkpoint(self) -> tuple[int, int, int] | None:
        """(busy, log frames, frames copied) of one PASSIVE checkpoint, or None if it failed."""
        try:
            row = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # a busy or failed checkpoint is retried on the next tick
            log.warning("store_checkpoint_failed", error=str(exc))
            return None
        self.runs += 1
        return row

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._db.close()
