"""The filesystem store's retention files: pins (``<tt>/<task hex>.pin``, "<unix time>\\n") and the sweep of
one shard directory. Directory fsyncs are left to the caller (relay.store._filesystem)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["read_pin", "sweep_shard", "write_pin"]


def read_pin(path: Path | str | None) -> float:
    """The unix time a pin file holds; 0 when there is none (or it cannot be read)."""
    if path is None:
        return 0.0
    try:
        return float(Path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def write_pin(pin: Path, until: float, staging: Path) -> float:
    """Sets `pin` to the later of `until` and what it holds, durably (staged, fsynced, renamed); returns it."""
    until = max(float(until), read_pin(pin))
    try:
        with open(staging, "x") as f:
            f.write(f"{until:.0f}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, pin)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return until


def sweep_shard(directory: Path, cutoff: float, now: float) -> tuple[int, bool]:
    """Removes the blobs (and sidecars) of `directory` last written before `cutoff`, except those of a task
    pinned past `now`, and the pins that ran out. Returns (blobs removed, whether anything was removed)."""
    pins: dict[str, str] = {}
    expired: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".pin"):
                    pins[entry.name[: -len(".pin")]] = entry.path
                elif entry.name.endswith(".blob"):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_mtime < cutoff:
                            expired.append(entry.name)
    except FileNotFoundError:
        return 0, False
    pinned = {task: read_pin(path) for task, path in pins.items()}
    removed, changed = 0, False
    for name in expired:
        if pinned.get(name.split("+", 1)[0], 0.0) > now:
            continue  # evidence: kept until its pin runs out
        (directory / name).unlink(missing_ok=True)
        (directory / f"{name[: -len('.blob')]}.sha256").unlink(missing_ok=True)
        removed += 1
        changed = True
    for task, until in pinned.items():
        if until <= now:
            Path(pins[task]).unlink(missing_ok=True)
            changed = True
    return removed, changed
