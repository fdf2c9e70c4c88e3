"""No reentrancy: a malicious receiver contract re-enters from its receive() hook during every payout."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from chain._artifacts import load_artifact
from chain.client import ChainClient
from chain.deploy import ETHER, deploy_artifact
from chain.errors import ContractRevert
from tests.unit.chain.conftest import TEST_DEPLOY, ChainEnv

HOUR = 3600


class Attacker:
    def __init__(self, env: ChainEnv, owner: LocalAccount, address: str) -> None:
        self.client: ChainClient = env.client(owner)
        self.contract = env.w3.eth.contract(address=address, abi=load_artifact("test/MaliciousReceiver").abi)
        self.address = address

    async def _send(self, fn, value: int = 0) -> None:
        sender = self.client.sender_for(None)
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        await sender.preflight(self.address, data, value)
        await self.client.wait_receipt(await sender.send(self.address, data, gas=1_000_000, value=value))

    async def act(self, target: str, data: str, value: int = 0) -> None:
        await self._send(self.contract.functions.act(target, data), value)

    async def arm(self, target: str, data: str, bubble: bool) -> None:
        await self._send(self.contract.functions.arm(target, data, bubble))

    async def view(self, name: str):
        return await getattr(self.contract.functions, name)().call()


@pytest.fixture
async def attacker(chain_env: ChainEnv) -> Attacker:
    owner = await chain_env.funded(2 * TEST_DEPLOY.min_stake)
    sender = chain_env.client(owner).sender_for(None)
    address, _ = await deploy_artifact(sender, "test/MaliciousReceiver")
    return Attacker(chain_env, owner, address)


async def test_stake_withdraw_reentry(chain_env: ChainEnv, attacker: Attacker) -> None:
    c = chain_env.client()
    staking = c.staking
    await attacker.act(staking.address, staking.encode_abi("stake", []), TEST_DEPLOY.min_stake)
    await attacker.act(staking.address, staking.encode_abi("requestUnstake", []))
    await c.increase_time(HOUR + 1)
    withdraw = staking.encode_abi("withdraw", [])
    await attacker.arm(staking.address, withdraw, bubble=True)
    held = await c.balance_of(staking.address)
    with pytest.raises(ContractRevert) as err:  # the guarded re-entry fails, the payment fails, all reverts
        await attacker.act(staking.address, withdraw)
    assert err.value.error == "TransferFailed"
    assert await c.balance_of(staking.address) == held
    assert await c.stake_of(attacker.address) == TEST_DEPLOY.min_stake
    await attacker.arm(staking.address, withdraw, bubble=False)
    await attacker.act(staking.address, withdraw)  # the re-entry is refused; the one payment goes through
    assert await attacker.view("reentered") and not await attacker.view("reentryOk")
    assert await attacker.view("received") == TEST_DEPLOY.min_stake
    assert await c.balance_of(staking.address) == held - TEST_DEPLOY.min_stake
    assert await c.stake_of(attacker.address) == 0


async def test_deposit_withdraw_reentry(chain_env: ChainEnv, attacker: Attacker) -> None:
    c = chain_env.client()
    ledger = c.ledger
    await attacker.act(ledger.address, ledger.encode_abi("deposit", []), 10 * ETHER)
    await attacker.act(ledger.address, ledger.encode_abi("requestWithdrawal", [4 * ETHER]))
    await c.increase_time(HOUR + 1)
    withdraw = ledger.encode_abi("withdrawDeposit", [])
    await attacker.arm(ledger.address, withdraw, bubble=True)
    held = await c.balance_of(ledger.address)
    with pytest.raises(ContractRevert):
        await attacker.act(ledger.address, withdraw)
    assert await c.balance_of(ledger.address) == held
    await attacker.arm(ledger.address, withdraw, bubble=False)
    await attacker.act(ledger.address, withdraw)
    assert not await attacker.view("reentryOk")
    assert await c.balance_of(ledger.address) == held - 4 * ETHER
    assert await c.deposit_balance(attacker.address) == 6 * ETHER


async def test_kick_out_reentry(chain_env: ChainEnv, attacker: Attacker) -> None:
    c = chain_env.client()
    staking = c.staking
    await attacker.act(staking.address, staking.encode_abi("stake", []), TEST_DEPLOY.min_stake)
    # during the kick-out payment the node re-enters to kick itself out / withdraw again
    await attacker.arm(staking.address, staking.encode_abi("withdraw", []), bubble=True)
    held = await c.balance_of(staking.address)
    with pytest.raises(ContractRevert) as err:
        await c.kick_out(attacker.address)
    assert err.value.error == "TransferFailed"
    assert await c.balance_of(staking.address) == held
    await attacker.arm(staking.address, staking.encode_abi("withdraw", []), bubble=False)
    await c.wait_receipt(await c.kick_out(attacker.address))
    assert await attacker.view("received") == TEST_DEPLOY.min_stake
    assert await c.balance_of(staking.address) == held - TEST_DEPLOY.min_stake
