"""Deploys the three Helium contracts and wires them: NetworkStats, NodeStaking, TaskLedger.

Order: stats, staking, ledger; then staking.setLedger(ledger) (the one EIP-712 domain is the ledger's),
and stats grants UPDATER_ROLE to staking and ledger. The admin key deploys and keeps DEFAULT_ADMIN_ROLE;
the coordinator gets COORDINATOR_ROLE in staking and ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3

from chain._artifacts import load_artifact
from chain._tx import Rpc, TxSender
from chain.errors import TransactionReverted
from chain.models import ClientSettings, ContractAddresses

__all__ = ["DeploySettings", "deploy_contracts", "deploy_artifact"]

log = structlog.get_logger(__name__)
ETHER = 10**18


@dataclass(frozen=True)
class DeploySettings:
    min_stake: int = 400 * ETHER
    unstake_delay: timedelta = timedelta(hours=1)
    withdraw_delay: timedelta = timedelta(hours=1)
    treasury: str | None = None  # default: the admin address


async def _wait(sender: TxSender, tx: bytes, settings: ClientSettings) -> dict:
    receipt = await sender.wait(tx, settings.receipt_timeout.total_seconds())
    if receipt["status"] != 1:
        raise TransactionReverted(f"deployment transaction 0x{tx.hex()} reverted", tx_hash=tx)
    return receipt


async def deploy_artifact(sender: TxSender, name: str, *args, settings: ClientSettings = ClientSettings()) -> tuple[str, int]:
    """Deploys artifact `name` with constructor `args`; returns (address, block number)."""
    art = load_artifact(name)
    data = bytes.fromhex(sender.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(*args).data_in_transaction[2:])
    receipt = await _wait(sender, await sender.send(None, data, gas=settings.deploy_gas), settings)
    return to_checksum_address(receipt["contractAddress"]), int(receipt["blockNumber"])


async def deploy_contracts(
    w3: AsyncWeb3,
    admin: LocalAccount | bytes,
    coordinator: str,
    settings: DeploySettings = DeploySettings(),
    client_settings: ClientSettings = ClientSettings(),
) -> ContractAddresses:
    admin = admin if isinstance(admin, LocalAccount) else Account.from_key(admin)
    rpc = Rpc(client_settings)
    chain_id = await rpc.call(lambda: w3.eth.chain_id, "chain_id")
    sender = TxSender(w3, admin, chain_id, rpc, client_settings)
    coordinator = to_checksum_address(coordinator)
    treasury = to_checksum_address(settings.treasury or admin.address)
    stats, first_block = await deploy_artifact(sender, "NetworkStats", admin.address, settings=client_settings)
    staking, _ = await deploy_artifact(
        sender, "NodeStaking", admin.address, coordinator, stats, treasury, settings.min_stake,
        int(settings.unstake_delay.total_seconds()), settings=client_settings,
    )  # fmt: skip
    ledger, _ = await deploy_artifact(
        sender, "TaskLedger", admin.address, coordinator, stats, staking,
        int(settings.withdraw_delay.total_seconds()), settings=client_settings,
    )  # fmt: skip
    updater = keccak(b"UPDATER_ROLE")
    stats_c = w3.eth.contract(address=stats, abi=load_artifact("NetworkStats").abi)
    staking_c = w3.eth.contract(address=staking, abi=load_artifact("NodeStaking").abi)
    for fn in (
        staking_c.functions.setLedger(ledger),
        stats_c.functions.grantRole(updater, staking),
        stats_c.functions.grantRole(updater, ledger),
    ):
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        await _wait(sender, await sender.send(fn.address, data, gas=client_settings.call_gas), client_settings)
    addresses = ContractAddresses(stats=stats, staking=staking, ledger=ledger, deploy_block=first_block)
    log.info("chain_contracts_deployed", **addresses.as_dict(), chain_id=chain_id)
    return addresses
