"""The root cause of issue #13 item 9: a tool's JSON schema is a protobuf Struct, whose map iterates in an
order that is random per process; three nodes rendered the same tools in different orders into the prompt,
so the same greedy task gave them different tokens (a 609-token tools prompt, one node slashed). Tools now
reach the template with sorted keys: the same prompt ids in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PROPS = {f"field_{c}": {"type": "string", "description": f"the {c}"} for c in "qwertyuiop"}
TASK = {"model": "helium/tiny", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
            "type": "object", "properties": PROPS, "required": sorted(PROPS), "additionalProperties": False}}}]}
SCRIPT = f"""
import json
from helium.tasks.gpt import load_gpt_task
from worker.executors.gpt._prompt import tool_dicts
print(json.dumps(tool_dicts(load_gpt_task({json.dumps(TASK)!r}))))
"""


def test_tools_render_the_same_in_every_process():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = {subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True, timeout=120).stdout for _ in range(4)}  # fmt: skip
    assert len(outs) == 1, outs
    (out,) = outs
    tools = json.loads(out)
    assert out.strip() == json.dumps(tools, sort_keys=True)  # every object's keys sorted, at every level
    assert tools[0]["function"]["parameters"]["properties"] == PROPS
