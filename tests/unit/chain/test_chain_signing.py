"""The contracts and chain.signing agree on the exact EIP-712 bytes, both ways."""

from __future__ import annotations

import os

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from chain.signing import (
    INVALID_ARGS_HASH,
    compact_signature,
    compute_task_id,
    result_digest,
    sd_result_hash,
    sign_result,
    sign_task,
    task_digest,
)
from tests.unit.chain.conftest import ChainEnv


async def test_contract_digests_equal_python_digests(embedded_env: ChainEnv) -> None:
    c = embedded_env.client()
    d = embedded_env.domain
    creator = Account.create()
    args_hash = os.urandom(32)
    task_id = compute_task_id(creator.address, 7, args_hash)
    on_chain = await c.ledger.functions.hashTask(task_id, args_hash, 123, 7, 456).call()
    assert on_chain == task_digest(d, task_id, args_hash, 123, 7, 456)
    node = Account.create()
    on_chain = await c.ledger.functions.hashResult(task_id, INVALID_ARGS_HASH, node.address).call()
    assert on_chain == result_digest(d, task_id, INVALID_ARGS_HASH, node.address)
    # the one domain: ("Helium", "1", chainId, TaskLedger)
    domain_type = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    expected = keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"],
                             [domain_type, keccak(b"Helium"), keccak(b"1"), d.chain_id, d.verifying_contract]))  # fmt: skip
    assert await c.ledger.functions.domainSeparator().call() == expected
    assert await c.ledger.functions.INVALID_ARGS_HASH().call() == INVALID_ARGS_HASH
    assert await c.staking.functions.INVALID_ARGS_HASH().call() == INVALID_ARGS_HASH


async def test_python_signatures_recover_to_the_signer_on_chain(embedded_env: ChainEnv) -> None:
    """ecrecover of the contract's digest with a Python-made (compact) signature gives the signer."""
    d = embedded_env.domain
    c = embedded_env.client()
    key = Account.create()
    task_id, args_hash = os.urandom(32), os.urandom(32)
    sig = sign_task(key, d, task_id, args_hash, 5, 1, 9)
    digest = await c.ledger.functions.hashTask(task_id, args_hash, 5, 1, 9).call()
    assert Account._recover_hash(digest, signature=sig) == key.address
    r, vs = compact_signature(sig)
    assert int.from_bytes(vs, "big") >> 255 == sig[64] - 27 and r == sig[:32]
    rsig = sign_result(key, d, task_id, b"\x05" * 32)
    assert Account._recover_hash(result_digest(d, task_id, b"\x05" * 32, key.address), signature=rsig) == key.address


async def test_hamming_and_sd_hash(embedded_env: ChainEnv) -> None:
    c = embedded_env.client()
    for a, b in ((0, 0), (0, 2**64 - 1), (0x0F0F, 0xF0F0), (123456789, 987654321)):
        assert await c.staking.functions.hamming(a, b).call() == bin(a ^ b).count("1")
    # keccak256(abi.encodePacked(uint64[])) pads each element to 32 bytes
    assert sd_result_hash([1, 2]) == keccak(encode(["uint256", "uint256"], [1, 2]))
    assert await c.staking.functions.phashThreshold().call() == 5
