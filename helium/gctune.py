"""Garbage-collector settings for a long-running server process (the coordinator).

CPython's cyclic collector is tuned for scripts: a young collection every 700 net container
allocations, and a full collection whenever the long-lived heap has grown by a quarter since the last
one. A coordinator keeps about 100 tracked objects per connected node, so with 10,000 nodes a full
collection walks about a million objects and stops the event loop for 0.2-0.7 s on the 2-core
reference host: several times in a row while nodes (re)connect, and again whenever enough objects of
tasks in flight were promoted (they live a few milliseconds, long enough to survive two young
collections at the default pace).

`tune_for_server()`, called once the server is up:
- freezes what exists then (modules, classes, settings, the recovered state: it lives as long as the
  process), so no collection walks it again;
- raises the young threshold from 700 to `YOUNG_THRESHOLD` net allocations. Objects of a task in flight
  die by reference counting before that many accumulate, so few are promoted; and since a full collection
  also waits for 10 middle ones (100 young ones, a million net allocations), a burst of joining nodes no
  longer sets off one full collection after another. Measured with 10,000 nodes joining
  (`bench.idle_workers`): the longest pause went from about 700 ms (a chain of full collections) to about
  80 ms (a middle collection); a young one takes a few milliseconds. Reference cycles are still collected.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_for_server"]

YOUNG_THRESHOLD = 10_000
_OLDER_THRESHOLDS = (10, 10)  # young collections per middle one, middle ones per full one (at least)


def tune_for_server() -> tuple[int, int, int]:
    """Applies the settings above to this process; returns the thresholds it replaced."""
    previous = gc.get_threshold()
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *_OLDER_THRESHOLDS)
    return previous
