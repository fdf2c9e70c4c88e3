"""chain._abi gives eth_abi's bytes for the settle, slash and view calldata, refuses (for eth_abi to
decide) what it does not handle, and its word decoders read events as eth_abi does."""

from __future__ import annotations

import random

import pytest
from eth_abi import decode, encode
from eth_utils import to_checksum_address

from chain._abi import Unsupported, encoder, word_decoder

SETTLE = [
    "(bytes32,address,bytes32,uint256,uint256,uint256,bytes32,bytes32,bytes32,(address,uint8,bytes32,bytes32)[],uint64[][])[]",
    "(bytes32,uint8,(address,bytes32,uint64[],bytes32,bytes32)[])[]",
]


def _addr(r: random.Random) -> str:
    return to_checksum_address("0x" + r.randbytes(20).hex())


def _task(r: random.Random) -> tuple:
    results = [(_addr(r), r.randrange(256), r.randbytes(32), r.randbytes(32)) for _ in range(r.randrange(2, 4))]
    phashes = [[r.randrange(1 << 64) for _ in range(r.randrange(3))] for _ in range(r.randrange(3))]
    return (r.randbytes(32), _addr(r), r.randbytes(32), r.randrange(1 << 200), r.randrange(1 << 64), r.randrange(1 << 40),
            r.randbytes(32), r.randbytes(32), r.randbytes(32), results, phashes)  # fmt: skip


def _slash(r: random.Random) -> tuple:
    res = [(_addr(r), r.randbytes(32), [r.randrange(1 << 64)] * r.randrange(3), r.randbytes(32), r.randbytes(32))
           for _ in range(3)]  # fmt: skip
    return (r.randbytes(32), r.randrange(2), res)


@pytest.mark.parametrize("seed", range(8))
def test_settle_calldata_is_eth_abis(seed: int) -> None:
    r = random.Random(seed)
    values = [[_task(r) for _ in range(r.randrange(60))], [_slash(r) for _ in range(r.randrange(3))]]
    assert encoder(SETTLE)(values) == encode(SETTLE, values)


@pytest.mark.parametrize(("types", "values"), [
    (["address[]", "uint256[]"], [["0x" + "ab" * 20, "0x" + "CD" * 20], [0, 2**256 - 1]]),
    (["uint256[2]", "bytes", "string", "bool", "int8", "bytes4"], [[1, 2], b"abc", "h\u00e9", True, -3, b"\x01\x02"]),
    (["(uint256,bytes)[2]", "(uint256,bool)"], [[(1, b"x"), (2, b"y" * 40)], (7, False)]),
    ([], []),
])  # fmt: skip
def test_other_types_are_eth_abis(types: list[str], values: list) -> None:
    assert encoder(types)(values) == encode(types, values)


@pytest.mark.parametrize(("types", "values"), [
    (["uint8"], [256]), (["uint256"], [-1]), (["address"], ["alice.eth"]), (["bool"], [1]), (["bytes4"], [b"12345"]),
    (["uint256[2]"], [[1]]), (["fixed128x18"], [1]),
])  # fmt: skip
def test_what_it_leaves_to_eth_abi(types: list[str], values: list) -> None:
    with pytest.raises(Unsupported):
        encoder(types)(values)


def test_word_decoders() -> None:
    for t, v in (("address", "0x" + "ab" * 20), ("bool", True), ("uint8", 200), ("uint256", 2**255), ("bytes32", b"\x07" * 32)):
        word = encode([t], [v])
        assert word_decoder(t)(word) == decode([t], word)[0]
    with pytest.raises(Unsupported):
        word_decoder("address")(b"\x01" + encode(["address"], ["0x" + "ab" * 20])[1:])
    with pytest.raises(Unsupported):
        word_decoder("uint8")((256).to_bytes(32, "big"))
    assert word_decoder("string") is None


def test_encode_function_is_web3s() -> None:
    from web3 import Web3

    from chain._artifacts import load_artifact
    from chain._tx import encode_function

    abi = load_artifact("TaskLedger").abi
    ledger = Web3().eth.contract(address="0x" + "11" * 20, abi=abi)
    r = random.Random(3)
    args = ([_task(r) for _ in range(5)], [_slash(r)])
    assert encode_function(abi, "settle", args) == bytes.fromhex(ledger.functions.settle(*args)._encode_transaction_data()[2:])
    many = ([_addr(r)], [7])
    assert encode_function(abi, "settledMany", many) == bytes.fromhex(
        ledger.functions.settledMany(*many)._encode_transaction_data()[2:])
    with pytest.raises(ValueError):
        encode_function(abi, "settledMany", (["not an address"], [1]))
