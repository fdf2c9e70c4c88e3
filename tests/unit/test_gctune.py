"""The coordinator's garbage-collector settings (helium.gctune), applied in a fresh interpreter: they are
process-wide, and a test must not freeze the objects of the test session itself."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import gc, json, weakref
from helium.gctune import YOUNG_THRESHOLD, tune_for_server
before = gc.get_threshold()
previous = tune_for_server()
frozen = gc.get_freeze_count()

class Node:  # a reference cycle made after tuning, like a closed stream's objects
    pass
a, b = Node(), Node()
a.peer, b.peer = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "previous": previous, "after": gc.get_threshold(), "frozen": frozen,
                  "young": YOUNG_THRESHOLD, "cycle_collected": alive() is None}))
"""


def test_tuning_freezes_start_up_objects_raises_thresholds_and_still_collects_cycles():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    r = json.loads(out.stdout)
    assert r["previous"] == r["before"] == [700, 10, 10]
    assert r["after"] == [r["young"], 10, 10] and r["young"] > 700
    assert r["frozen"] > 1000, "the objects of start-up are frozen"
    assert r["cycle_collected"], "cycles made later are still collected"
