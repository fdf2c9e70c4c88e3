"""The bounded JSON loader and the recursion limit every Helium process runs with (issue #14 item 1)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helium import boundedjson
from helium._limits import SAFE_RECURSION_LIMIT
from helium.boundedjson import JsonInvalid, JsonTooDeep, JsonTooLarge


@pytest.mark.parametrize("text", [
    "[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 70 + "1" + "}" * 70, "[{" * 40,
    '"x", ' + "[" * 65,  # a closed string before the brackets does not hide them
])
def test_too_deep_is_refused_before_parsing(text):
    with pytest.raises(JsonTooDeep, match="more than 64 levels"):
        boundedjson.loads(text)


@pytest.mark.parametrize("doc", [
    {"model": "a/b", "messages": [{"role": "user", "content": "[[[[{{{{" * 100 + '\\"' + "]]]"}]},
    [[[[[]]]]], "[" * 64, {"nested": json.loads("[" * 63 + "]" * 63)},
])
def test_brackets_in_strings_and_legal_depth_pass(doc):
    assert boundedjson.loads(json.dumps(doc)) == doc


def test_exactly_the_limit_passes_and_one_more_fails():
    assert boundedjson.loads("[" * 64 + "]" * 64, max_depth=64)
    with pytest.raises(JsonTooDeep):
        boundedjson.loads("[" * 65 + "]" * 65, max_depth=64)


def test_unterminated_string_hides_nothing_the_parser_would_recurse_into():
    with pytest.raises(JsonInvalid, match="Unterminated string"):
        boundedjson.loads('"' + "[" * 100_000)


def test_size_is_checked_first():
    with pytest.raises(JsonTooLarge, match="at most 10 are allowed"):
        boundedjson.loads(b"[" * 11, max_bytes=10)


@pytest.mark.parametrize(("data", "match"), [
    (b"\xff\xfe{}", "not valid UTF-8"), ('{"a": "\ud800"}', "not valid UTF-8"), ("NaN", "NaN is not a JSON number"),
    ("[Infinity]", "Infinity"), ("1" * 5000, "not valid JSON"), ('{"a": 1', "not valid JSON"),
])
def test_invalid_input_is_a_value_error_with_a_reason(data, match):
    with pytest.raises(JsonInvalid, match=match) as err:
        boundedjson.loads(data)
    assert isinstance(err.value, ValueError)


def test_decode_error_keeps_line_and_column():
    with pytest.raises(JsonInvalid) as err:
        boundedjson.loads('{\n  "a": [1,,]}')
    assert (err.value.decode_error.lineno, err.value.decode_error.colno) == (2, 11)


def test_recursion_limit_is_restored_after_the_ethereum_imports():
    """py_ecc raises the limit to 100,000 when imported; with it, 100,000 nested `[` overflowed the C stack
    (a segfault). Importing helium restores a safe limit that no later import raises again."""
    code = ("import sys, json, helium, eth_account, chain.signing\n"
            "import eth  # py-evm asks for 12,288\n"
            "print(sys.getrecursionlimit())\n"
            "try:\n    json.loads('[' * 100000 + ']' * 100000)\nexcept RecursionError:\n    print('RecursionError')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.split() == [str(SAFE_RECURSION_LIMIT), "RecursionError"]
