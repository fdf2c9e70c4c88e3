"""The GPT task definition: the example loads unchanged, every bad field is refused with its bound, the
JSON Schema agrees with the validator on the examples."""

from __future__ import annotations

import copy
import json
from importlib import resources

import jsonschema
import pytest

from helium.tasks import TaskArgsError
from helium.tasks.gpt import (
    generation_overrides,
    gpt_task_to_dict,
    load_gpt_task,
    validate_gpt_task,
    with_defaults,
)
from tests.unit.worker.gpt.conftest import EXAMPLE


@pytest.fixture(scope="module")
def schema() -> dict:
    text = resources.files("helium").joinpath("schemas/gpt_task.schema.json").read_text()
    doc = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def test_example_loads_unchanged_and_round_trips():
    task = load_gpt_task(json.dumps(EXAMPLE))
    validate_gpt_task(task)
    # The proto JSON mapping writes a uint64 as a string; everything else comes back as sent.
    assert gpt_task_to_dict(task) == {**EXAMPLE, "seed": "42"}
    assert load_gpt_task(gpt_task_to_dict(task)) == task
    assert task.generation_config.stop_strings == ["###"]
    assert task.quantize_bits == 4 and task.seed == 42


def test_only_model_and_messages_are_required_and_defaults_fill_in():
    task = load_gpt_task({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    validate_gpt_task(task)
    full = with_defaults(task)
    assert full.seed == 0 and full.dtype == "auto" and not full.HasField("quantize_bits")
    assert full.generation_config.max_new_tokens == 256
    # Everything else is left unset, so the model's own generation_config applies.
    assert generation_overrides(task) == {"max_new_tokens": 256}
    assert generation_overrides(load_gpt_task(EXAMPLE)) == {
        "max_new_tokens": 256, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "min_p": 0.05,
        "typical_p": 1.0, "num_beams": 1, "repetition_penalty": 1.1, "num_return_sequences": 1,
        "stop_strings": ["###"]}


def test_null_quantize_bits_and_string_seed_are_accepted():
    task = load_gpt_task({"model": "m", "messages": [{"role": "user", "content": "x"}], "quantize_bits": None,
                          "seed": "18446744073709551615"})
    assert not task.HasField("quantize_bits") and task.seed == 2**64 - 1


def _bad(path: str, value):
    doc = copy.deepcopy(EXAMPLE)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


class _Delete:
    """Marks a field to remove; a stable repr keeps test ids equal across xdist workers."""

    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Delete()

BAD = [
    ("generation_config.temperature", -0.1, "generation_config.temperature must be >= 0, got -0.1"),
    ("generation_config.top_p", 1.5, "generation_config.top_p must be in (0, 1], got 1.5"),
    ("generation_config.top_p", 0.0, "generation_config.top_p must be in (0, 1], got 0.0"),
    ("generation_config.min_p", 1.5, "generation_config.min_p must be in [0, 1], got 1.5"),
    ("generation_config.typical_p", 0.0, "generation_config.typical_p must be in (0, 1], got 0.0"),
    ("generation_config.top_k", 2_000_000, "generation_config.top_k must be in [0, 1000000], got 2000000"),
    ("generation_config.num_beams", 0, "generation_config.num_beams must be in [1, 16], got 0"),
    ("generation_config.repetition_penalty", 0.0, "generation_config.repetition_penalty must be > 0, got 0.0"),
    ("generation_config.max_new_tokens", 0, "generation_config.max_new_tokens must be in [1, 32768], got 0"),
    ("generation_config.max_new_tokens", 40000, "generation_config.max_new_tokens must be in [1, 32768], got 40000"),
    ("generation_config.num_return_sequences", 0,
     "generation_config.num_return_sequences must be in [1, 16], got 0"),
    ("generation_config.stop_strings", [""], "generation_config.stop_strings[0] must be 1 to 256 characters, got 0"),
    ("messages", [], "messages must hold at least one message"),
    ("messages.1.role", "robot", "messages[1].role must be one of system, user, assistant, tool, got 'robot'"),
    ("messages.1", {"role": "tool", "content": "42"}, "messages[1].tool_call_id is required for a tool message"),
    ("messages.1", {"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
     "messages[1].tool_calls is only allowed on assistant messages"),
    ("messages.1", {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                          "arguments": "{oops"}}]},
     "messages[1].tool_calls[0].function.arguments must be a JSON-encoded string"),
    ("messages.1.content", "", "messages[1].content must not be empty for a user message"),
    ("dtype", "int3", "dtype must be one of auto, float16, bfloat16, float32, got 'int3'"),
    ("quantize_bits", 3, "quantize_bits must be 4, 8 or null, got 3"),
    ("model", "", "model is required"),
    ("model", _DELETE, "model is required"),
    ("tools.0.function", {"description": "no name"}, "tools[0].function.name is required"),
    ("tools.0.type", "retrieval", "tools[0].type must be \"function\", got 'retrieval'"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_each_bad_field_is_refused_by_name_and_bound(path, value, message, schema):
    doc = _bad(path, value)
    with pytest.raises(TaskArgsError) as err:
        validate_gpt_task(load_gpt_task(doc))
    assert message in str(err.value)
    assert err.value.field.split("[")[0].split(".")[0] == path.split(".")[0]
    # The shipped JSON Schema refuses the same documents (it cannot see inside a JSON-encoded string).
    if "JSON-encoded" not in message:
        assert not jsonschema.Draft202012Validator(schema).is_valid(doc)


def test_num_return_sequences_bounded_by_num_beams_when_beams_are_used():
    ok = load_gpt_task(_bad("generation_config", {"num_beams": 4, "num_return_sequences": 4}))
    validate_gpt_task(ok)
    with pytest.raises(TaskArgsError, match=r"num_return_sequences must be <= num_beams \(4\) when beams are used, "
                                             r"got 5"):
        validate_gpt_task(load_gpt_task(_bad("generation_config", {"num_beams": 4, "num_return_sequences": 5})))
    # Without beams (sampling), several sequences are fine.
    validate_gpt_task(load_gpt_task(_bad("generation_config", {"do_sample": True, "num_return_sequences": 5})))


@pytest.mark.parametrize(("doc", "field", "text"), [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temprature": 1}, "temprature",
     "temprature is not a field of the GPT task"),
    ({"model": "m", "messages": [{"role": "user", "content": 1}]}, "messages[0].content", "must be a string"),
    ({"model": "m", "messages": [], "generation_config": {"top_k": -1}}, "generation_config.top_k", "must be >= 0"),
    ({"model": "m", "messages": [], "generation_config": {"temperature": "hot"}}, "generation_config.temperature",
     "must be a finite number"),
])
def test_shape_errors_name_the_field(doc, field, text):
    with pytest.raises(TaskArgsError) as err:
        load_gpt_task(doc)
    assert err.value.field == field and text in str(err.value)


def test_not_json_and_not_an_object_are_refused():
    with pytest.raises(TaskArgsError, match="not valid JSON"):
        load_gpt_task("{nope")
    with pytest.raises(TaskArgsError, match="must be a JSON object"):
        load_gpt_task("[]")


def test_schema_accepts_the_valid_examples(schema):
    valid = jsonschema.Draft202012Validator(schema)
    assert valid.is_valid(EXAMPLE)
    assert valid.is_valid({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    assert valid.is_valid({"model": "m", "quantize_bits": None, "seed": "7", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]})
    for doc in (EXAMPLE, {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}):
        validate_gpt_task(load_gpt_task(doc))
