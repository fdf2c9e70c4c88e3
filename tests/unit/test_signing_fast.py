"""The hand-packed EIP-712 digests and signatures of chain.signing equal eth_account's
generic typed-data encoder, for every Helium type (so the contracts, which follow the
standard, verify them)."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from chain import signing

DOMAIN = signing.Domain(chain_id=1337, verifying_contract="0x" + "ab" * 20)

MESSAGES = {
    "Task": {"taskId": os.urandom(32), "argsHash": os.urandom(32), "fee": 10**18, "nonce": 7, "deadline": 2**40},
    "Result": {"taskId": os.urandom(32), "resultHash": os.urandom(32), "node": Account.create().address},
    "Cancel": {"taskId": os.urandom(32)},
    "Register": {"challenge": os.urandom(32), "node": Account.create().address, "infoHash": os.urandom(32)},
    "NodeControl": {"node": Account.create().address, "action": 3, "timestamp": 1_700_000_000},
    "RelayRequest": {"method": "Put", "taskId": os.urandom(32), "slot": "result/0xabc/0", "contentHash": os.urandom(32),
                     "timestamp": 1_700_000_000, "nonce": os.urandom(32)},  # fmt: skip
    "RelayGrant": {"taskId": os.urandom(32), "grantee": Account.create().address, "readSlots": "input\nresult/*",
                   "writeSlots": "", "expiresAt": 2**33},  # fmt: skip
}


@pytest.mark.parametrize("primary", sorted(MESSAGES))
def test_digest_and_signature_match_eth_account(primary):
    key = Account.create()
    msg = MESSAGES[primary]
    types = {primary: signing._TYPES[primary]}
    signable = encode_typed_data(DOMAIN.as_dict(), types, msg)
    expected_digest = signing.keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert signing._digest(DOMAIN, primary, msg) == expected_digest
    sig = signing._sign(key, DOMAIN, primary, msg)
    assert sig == bytes(Account.sign_typed_data(key.key, DOMAIN.as_dict(), types, msg).signature)
    assert signing._recover(DOMAIN, primary, msg, sig) == key.address
    assert Account.recover_message(signable, signature=sig) == key.address


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(0, 2**256 - 1),
       st.integers(0, 2**64), st.integers(0, 2**64))  # fmt: skip
def test_task_signatures_roundtrip(task_id, args_hash, fee, nonce, deadline):
    key = Account.create()
    sig = signing.sign_task(key, DOMAIN, task_id, args_hash, fee, nonce, deadline)
    assert signing.task_signer(DOMAIN, task_id, args_hash, fee, nonce, deadline, sig) == key.address
    other = signing.Domain(chain_id=DOMAIN.chain_id + 1, verifying_contract=DOMAIN.verifying_contract)
    assert signing.task_signer(other, task_id, args_hash, fee, nonce, deadline, sig) != key.address


def test_malformed_signatures_are_refused():
    msg = MESSAGES["Cancel"]
    sig = signing._sign(Account.create(), DOMAIN, "Cancel", msg)
    with pytest.raises(signing.SignatureError):
        signing._recover(DOMAIN, "Cancel", msg, sig[:64])
    with pytest.raises(signing.SignatureError):
        signing._recover(DOMAIN, "Cancel", msg, sig[:64] + b"\x05")
    high_s = sig[:32] + (signing._SECP256K1_N - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big") + sig[64:]
    with pytest.raises(signing.SignatureError, match="malleable"):
        signing._recover(DOMAIN, "Cancel", msg, high_s)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.integers(0, 2**256 - 1), st.binary(min_size=32, max_size=32))
def test_task_id_is_abi_encode_of_creator_nonce_args_hash(creator, nonce, args_hash):
    from eth_abi import encode
    from eth_utils import keccak, to_checksum_address

    address = to_checksum_address(creator)
    expected = keccak(encode(["address", "uint256", "bytes32"], [address, nonce, args_hash]))
    assert signing.compute_task_id(address, nonce, args_hash) == expected
