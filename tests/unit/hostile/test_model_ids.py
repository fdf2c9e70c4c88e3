"""A model is a hub id, never a path (issue #14 item 7): one rule, the same in the loader and the JSON Schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helium.tasks import TaskArgsError, check_model_id, is_model_id
from helium.tasks.gpt import load_gpt_task, validate_gpt_task

SCHEMAS = Path(__file__).resolve().parents[3] / "helium" / "schemas"
GOOD = ["gpt2", "Qwen/Qwen2.5-7B-Instruct", "helium-tiny/sdxl-refiner", "a/b", "org_1/x.y", "_a/_b"]
BAD = ["", "/etc", "../../etc/passwd", "./m", "a/b/c", "~/m", "a/../b", "a..b", "C:\\m", "org/name/", "-x", "x-",
       "a--b/c", " a/b", "a/b ", "a//b", ".hidden", "x" * 97, "é/b", "a/b\n"]


@pytest.mark.parametrize("name", GOOD)
def test_hub_ids_pass(name):
    assert is_model_id(name)
    check_model_id("model", name)


@pytest.mark.parametrize("name", BAD)
def test_paths_and_broken_ids_fail(name):
    assert not is_model_id(name)
    with pytest.raises(TaskArgsError, match="never a local path"):
        check_model_id("model", name)


@pytest.mark.parametrize("name", GOOD + BAD)
def test_the_json_schemas_say_the_same(name):
    gpt = json.loads((SCHEMAS / "gpt_task.schema.json").read_text())["properties"]["model"]
    sd = json.loads((SCHEMAS / "sd_task.schema.json").read_text())["$defs"]["model_id"]
    for rule in (gpt, sd):
        # JSON Schema patterns are ECMA-262; these use nothing that differs from Python's re.
        ok = bool(re.search(rule["pattern"], name)) and not re.search(rule["not"]["pattern"], name)
        assert ok == is_model_id(name), (name, rule)


def test_validate_refuses_a_path_unless_the_caller_runs_its_own_models():
    task = load_gpt_task({"model": "/models/llama", "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(TaskArgsError) as err:
        validate_gpt_task(task)
    assert err.value.field == "model"
    validate_gpt_task(task, local_model_dirs=True)  # the executor's own API, in tests and benches
