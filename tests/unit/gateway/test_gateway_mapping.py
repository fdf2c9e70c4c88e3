from __future__ import annotations

import pytest

from coordinator.gateway._images import image_request_to_args
from coordinator.gateway._mapping import chat_request_to_args, parse_fee, request_param_of
from coordinator.gateway.errors import InvalidRequestError
from coordinator.gateway.protocol import ChatCompletionRequest, ImageGenerationRequest


def _req(**kw) -> ChatCompletionRequest:
    base = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    return ChatCompletionRequest.model_validate({**base, **kw})


def test_openai_parameters_map_onto_the_gpt_task():
    args = chat_request_to_args(_req(
        messages=[{"role": "developer", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        max_completion_tokens=12, temperature=0.7, top_p=0.9, n=2, stop="END", seed=7,
        top_k=5, min_p=0.05, repetition_penalty=1.1, dtype="float32", quantize_bits=8,
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    ))
    gpt = args.gpt
    assert gpt.model == "tiny"
    assert [(m.role, m.content) for m in gpt.messages] == [("system", "be brief"), ("user", "ab")]
    gc = gpt.generation_config
    assert gc.max_new_tokens == 12 and gc.do_sample is True and gc.num_return_sequences == 2
    assert gc.temperature == pytest.approx(0.7) and gc.top_p == pytest.approx(0.9)
    assert gc.top_k == 5 and gc.min_p == pytest.approx(0.05) and gc.repetition_penalty == pytest.approx(1.1)
    assert list(gc.stop_strings) == ["END"]
    assert gpt.seed == 7 and gpt.dtype == "float32" and gpt.quantize_bits == 8
    assert gpt.tools[0]["function"]["name"] == "weather"


def test_temperature_zero_is_greedy_and_max_tokens_is_accepted():
    gc = chat_request_to_args(_req(temperature=0, max_tokens=5)).gpt.generation_config
    assert gc.do_sample is False and not gc.HasField("temperature") and gc.max_new_tokens == 5


def test_no_sampling_knob_leaves_the_models_own_config():
    gc = chat_request_to_args(_req()).gpt.generation_config
    assert not gc.HasField("do_sample") and not gc.HasField("max_new_tokens")


def test_assistant_tool_calls_and_tool_results_are_kept():
    args = chat_request_to_args(_req(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]))
    m = args.gpt.messages
    assert m[1].tool_calls[0].function.name == "weather" and m[2].tool_call_id == "c1"


def test_tool_choice_none_drops_the_tools():
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert len(chat_request_to_args(_req(tools=tools, tool_choice="none")).gpt.tools) == 0


@pytest.mark.parametrize(("kw", "param"), [
    ({"n": 2, "temperature": 0}, "n"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"seed": -1}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]"),
])
def test_unsupported_or_bad_values_are_400_naming_the_parameter(kw, param):
    with pytest.raises(InvalidRequestError) as err:
        chat_request_to_args(_req(**kw))
    assert err.value.status == 400 and err.value.param == param


def test_task_field_names_become_request_parameters():
    assert request_param_of("generation_config.top_p") == "top_p"
    assert request_param_of("gpt.generation_config.max_new_tokens") == "max_completion_tokens"
    assert request_param_of("generation_config.stop_strings[0]") == "stop"
    assert request_param_of("messages[1].role") == "messages[1].role"


def test_fee_defaults_and_bounds():
    assert parse_fee(None, default=10, min_fee=100) == 100
    assert parse_fee("5000", default=10, min_fee=100) == 5000
    with pytest.raises(InvalidRequestError) as err:
        parse_fee(50, default=10, min_fee=100)
    assert err.value.param == "fee"
    with pytest.raises(InvalidRequestError):
        parse_fee("lots", default=10, min_fee=0)


def test_image_request_maps_onto_the_sd_task():
    args = image_request_to_args(ImageGenerationRequest(prompt="a cat", model="tiny-sd", n=2, size="256x128",
                                                        steps=3, seed=9))
    sd = args.sd
    assert sd.base_model.name == "tiny-sd" and sd.prompt == "a cat"
    assert (sd.task_config.image_width, sd.task_config.image_height, sd.task_config.num_images) == (256, 128, 2)
    assert sd.task_config.steps == 3 and sd.task_config.seed == 9


@pytest.mark.parametrize(("kw", "param"), [({"size": "big"}, "size"), ({"size": "100x100"}, "size"),
                                           ({"model": None}, "model")])
def test_bad_image_requests_are_400(kw, param):
    with pytest.raises(InvalidRequestError) as err:
        image_request_to_args(ImageGenerationRequest(**{"prompt": "p", "model": "m", **kw}))
    assert err.value.param == param
