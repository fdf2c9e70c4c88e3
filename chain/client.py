"""The coordinator's asyncio client for the Helium contracts (web3.py, AsyncWeb3).

One ``ChainClient`` sends as one key (the coordinator's): nonces are local under a lock, gas limits are
explicit (settings, per operation), fees are EIP-1559 with a cap, every RPC has a deadline and bounded
retries, and every receipt wait has a deadline. A transaction is first run as an ``eth_call`` (preflight),
so a revert is raised as a decoded ``ContractRevert`` without spending gas.

Settlement is idempotent: ``settle`` first asks the ledger which (creator, nonce) pairs are already settled
and drops those tasks (a settlement that landed before a crash is never sent again); the contract's own
check is the last line of defence. It works the same over the embedded chain (``chain.devchain``) and any
JSON-RPC endpoint (``ChainClient.connect(url, ...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.middleware import AttributeDictMiddleware
from web3.providers.async_base import AsyncBaseProvider

from chain._artifacts import load_artifact
from chain._tx import Rpc, TxSender, decode_event, encode_call, encode_function
from chain.errors import ContractRevert, InvalidChainInput, SettlementRejected, TransactionReverted
from chain.models import (
    ChainEvent,
    ClientSettings,
    ContractAddresses,
    NetworkCounters,
    NodeInfo,
    Receipt,
    SlashEvidence,
    TaskSettlement,
)
from chain.signing import Domain

__all__ = ["ChainClient", "http_provider", "lean_web3"]

log = structlog.get_logger(__name__)
_CONTRACTS = ("TaskLedger", "NodeStaking", "NetworkStats")
_KEEPALIVE_S = 30.0


async def http_provider(url: str, timeout_s: float) -> AsyncHTTPProvider:
    """A JSON-RPC HTTP provider whose connections are kept alive. web3's own session closes each
    connection after its request (force_close), so every call paid a TCP connect; a connection that
    went stale (the node restarted) fails one request, which the retries absorb."""
    import aiohttp

    provider = AsyncHTTPProvider(url, request_kwargs={"timeout": timeout_s})
    session = aiohttp.ClientSession(raise_for_status=True,
                                    connector=aiohttp.TCPConnector(keepalive_timeout=_KEEPALIVE_S))  # fmt: skip
    await provider.cache_async_session(session)
    return provider


def lean_web3(provider: AsyncBaseProvider) -> AsyncWeb3:
    """AsyncWeb3 with only the result middleware this client reads (attribute access). web3's default
    request middleware costs the coordinator on every call and adds nothing here: validation fetches
    eth_chainId before each eth_call (every transaction carries its chainId, signed locally), and ENS
    names, gas-price strategies and buffered estimates serve eth_sendTransaction, which is never used."""
    return AsyncWeb3(provider, middleware=[AttributeDictMiddleware])


class ChainClient:
    """Everything the coordinator does on chain. Build it with ``await ChainClient.create(...)`` or
    ``await ChainClient.connect(url, ...)``; close it with ``await client.close()``."""

    def __init__(
        self,
        w3: AsyncWeb3,
        account: LocalAccount,
        addresses: ContractAddresses,
        chain_id: int,
        settings: ClientSettings,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.addresses = addresses
        self.chain_id = chain_id
        self.settings = settings
        self.domain = Domain(chain_id=chain_id, verifying_contract=addresses.ledger)
        self.ledger = w3.eth.contract(address=addresses.ledger, abi=load_artifact("TaskLedger").abi)
        self.staking = w3.eth.contract(address=addresses.staking, abi=load_artifact("NodeStaking").abi)
        self.stats_contract = w3.eth.contract(address=addresses.stats, abi=load_artifact("NetworkStats").abi)
        self._rpc = Rpc(settings)
        self._sender = TxSender(w3, account, chain_id, self._rpc, settings)
        self._senders: dict[str, TxSender] = {account.address: self._sender}
        self._events = self._event_table()

    @classmethod
    async def create(
        cls,
        provider: AsyncBaseProvider | AsyncWeb3,
        key: LocalAccount | bytes | str,
        addresses: ContractAddresses,
        settings: ClientSettings | None = None,
    ) -> ChainClient:
        settings = settings or ClientSettings()
        w3 = provider if isinstance(provider, AsyncWeb3) else lean_web3(provider)
        account = key if isinstance(key, LocalAccount) else Account.from_key(key)
        chain_id = await Rpc(settings).call(lambda: w3.eth.chain_id, "chain_id")
        return cls(w3, account, addresses, chain_id, settings)

    @classmethod
    async def connect(
        cls,
        url: str,
        key: LocalAccount | bytes | str,
        addresses: ContractAddresses,
        settings: ClientSettings | None = None,
    ) -> ChainClient:
        """A client over a JSON-RPC HTTP endpoint."""
        settings = settings or ClientSettings()
        provider = await http_provider(url, settings.rpc_timeout.total_seconds())
        return await cls.create(provider, key, addresses, settings)

    async def close(self) -> None:
        disconnect = getattr(self.w3.provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()

    # --- views -----------------------------------------------------------------------------------------

    async def _view(self, fn: Any, what: str) -> Any:
        return await self._rpc.call(lambda: fn.call(), what)

    async def stake_of(self, node: str) -> int:
        return await self._view(self.staking.functions.stakeOf(to_checksum_address(node)), "stake_of")

    async def node_info(self, node: str) -> NodeInfo:
        s = await self._view(self.staking.functions.nodeInfo(to_checksum_address(node)), "node_info")
        return NodeInfo(stake=s[0], unlock_at=s[1], left_at=s[2], slashed=s[3], active=s[4])

    async def min_stake(self) -> int:
        return await self._view(self.staking.functions.minStake(), "min_stake")

    async def deposit_of(self, creator: str) -> int:
        """The creator's deposit that new tasks may spend: its balance less a pending withdrawal request."""
        return await self._view(self.ledger.functions.availableOf(to_checksum_address(creator)), "deposit_of")

    async def deposit_balance(self, creator: str) -> int:
        """The creator's whole deposit balance (what settlement may debit)."""
        return await self._view(self.ledger.functions.depositOf(to_checksum_address(creator)), "deposit_balance")

    async def credit_of(self, node: str) -> int:
        return await self._view(self.ledger.functions.creditOf(to_checksum_address(node)), "credit_of")

    async def is_settled(self, creator: str, nonce: int) -> bool:
        """Whether the task of (creator, nonce) was settled (a creator nonce pays at most one task)."""
        return await self._view(self.ledger.functions.isSettled(to_checksum_address(creator), nonce), "is_settled")

    async def settled_flags(self, tasks: Sequence[TaskSettlement]) -> list[bool]:
        """is_settled for each task, in one call."""
        if not tasks:
            return []
        # Once per settle batch: calldata and the bool[] by eth_abi, not web3's contract call (whose
        # normalizers cost more than the chain's answer).
        args = ([t.creator for t in tasks], [t.nonce for t in tasks])
        try:
            data = encode_function(self.ledger.abi, "settledMany", args)
        except ValueError:
            data = encode_call(self.ledger.functions.settledMany(*args))
        tx = {"to": self.ledger.address, "data": data}
        raw = await self._rpc.call(lambda: self.w3.eth.call(tx), "settled_many")
        return list(abi_decode(["bool[]"], bytes(raw))[0])

    async def stats(self) -> NetworkCounters:
        s = await self._view(self.stats_contract.functions.snapshot(), "stats")
        return NetworkCounters(*s)

    async def balance_of(self, address: str) -> int:
        return await self._rpc.call(lambda: self.w3.eth.get_balance(to_checksum_address(address)), "balance")

    async def block_timestamp(self) -> int:
        block = await self._rpc.call(lambda: self.w3.eth.get_block("latest"), "get_block")
        return int(block["timestamp"])

    # --- coordinator transactions -----------------------------------------------------------------------

    async def settle(
        self, tasks: Sequence[TaskSettlement], slashes: Sequence[SlashEvidence] = ()
    ) -> bytes | None:
        """Sends one settle(tasks, slashes) transaction and returns its hash, or None if nothing is left to
        send. Tasks already settled on chain, and slashes of nodes already slashed (or with no stake), are
        dropped first. A batch the ledger would refuse raises SettlementRejected naming the task (and the
        node, when the error names one) before anything is sent: drop that item and send the rest again."""
        tasks = list(tasks)
        if len({(t.creator, t.nonce) for t in tasks}) != len(tasks):
            raise InvalidChainInput("tasks: two settlements share a (creator, nonce)")
        settled = await self.settled_flags(tasks)
        skipped = [t.task_id.hex() for t, done in zip(tasks, settled, strict=True) if done]
        if skipped:
            log.info("chain_settle_skip_settled", task_ids=skipped)
        tasks = [t for t, done in zip(tasks, settled, strict=True) if not done]
        slashes = await self._pending_slashes(slashes)
        if not tasks and not slashes:
            return None
        args = ([t.as_abi() for t in tasks], [s.as_abi() for s in slashes])
        try:
            fn, data = None, encode_function(self.ledger.abi, "settle", args)
        except ValueError:
            fn, data = self.ledger.functions.settle(*args), None
        phashes = sum(len(x.phashes) for s in slashes for x in (*s.agreeing, s.slashed))
        phashes += sum(t.phash_count for t in tasks)  # SD tasks: hashed and compared pairwise on chain
        s = self.settings
        gas = s.settle_base_gas + s.settle_gas_per_task * len(tasks)
        gas += s.settle_gas_per_slash * len(slashes) + s.settle_gas_per_phash * phashes
        try:
            tx = await self._transact(self.ledger, fn, gas=gas, data=data)
        except ContractRevert as exc:
            raise SettlementRejected(
                str(exc), task_id=exc.args_dict.get("taskId"), node=exc.args_dict.get("node"),
                error=exc.error, args=exc.args_dict, data=exc.data,
            ) from exc  # fmt: skip
        log.info("chain_settle_sent", tx=tx.hex(), tasks=len(tasks), slashes=len(slashes), gas=gas)
        return tx

    async def _pending_slashes(self, slashes: Sequence[SlashEvidence]) -> list[SlashEvidence]:
        """The slashes still to apply: one per node, none for a node already slashed or with no stake left."""
        out: dict[str, SlashEvidence] = {}
        for ev in slashes:
            if ev.node in out:
                continue
            info = await self.node_info(ev.node)
            if info.slashed or info.stake == 0:
                log.info("chain_slash_skip", node=ev.node, task_id=ev.task_id.hex(), slashed=info.slashed)
                continue
            out[ev.node] = ev
        return list(out.values())

    async def slash(self, evidence: SlashEvidence) -> bytes:
        """Sends NodeStaking.slash(evidence) on its own (settle can also carry slashes)."""
        phashes = sum(len(x.phashes) for x in (*evidence.agreeing, evidence.slashed))
        gas = self.settings.settle_gas_per_slash + self.settings.settle_gas_per_phash * phashes + 100_000
        return await self._transact(self.staking, self.staking.functions.slash(evidence.as_abi()), gas=gas)

    async def kick_out(self, node: str) -> bytes:
        return await self._transact(self.staking, self.staking.functions.kickOut(to_checksum_address(node)))

    async def wait_receipt(self, tx_hash: bytes, timeout: timedelta | float | None = None) -> Receipt:  # noqa: ASYNC109
        """The receipt of `tx_hash` within `timeout` (ChainTimeout otherwise); TransactionReverted if status 0."""
        if timeout is None:
            timeout = self.settings.receipt_timeout
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        raw = await self._sender.wait(tx_hash, seconds)
        receipt = Receipt(
            tx_hash=bytes(raw["transactionHash"]),
            status=int(raw["status"]),
            block_number=int(raw["blockNumber"]),
            gas_used=int(raw["gasUsed"]),
            events=tuple(e for e in (self._decode(lg) for lg in raw["logs"]) if e is not None),
        )
        if receipt.status != 1:
            raise TransactionReverted(f"transaction 0x{tx_hash.hex()} reverted", tx_hash=tx_hash)
        return receipt

    # --- events ------------------------------------------------------------------------------------------

    def _event_table(self) -> dict[bytes, tuple[str, dict, str]]:
        table = {}
        for contract, name in ((self.ledger, "TaskLedger"), (self.staking, "NodeStaking"), (self.stats_contract, "NetworkStats")):
            for item in contract.abi:
                if item["type"] == "event":
                    table[(contract.address.lower(), event_abi_to_log_topic(item))] = (name, item, contract.address)
        return table

    def _decode(self, lg: Any) -> ChainEvent | None:
        if not lg["topics"]:
            return None
        entry = self._events.get((str(lg["address"]).lower(), bytes(lg["topics"][0])))
        if entry is None:
            return None
        name, abi, _ = entry
        event, args = decode_event(self.w3.codec, abi, lg)
        return ChainEvent(
            contract=name,
            name=event,
            args=args,
            block_number=int(lg["blockNumber"]),
            tx_hash=bytes(lg["transactionHash"]),
            log_index=int(lg["logIndex"]),
        )

    async def events(self, from_block: int | None = None, to_block: int | str = "latest") -> list[ChainEvent]:
        """Every event of the three contracts in [from_block, to_block] (default: since deployment)."""
        params = {
            "fromBlock": self.addresses.deploy_block if from_block is None else from_block,
            "toBlock": to_block,
            "address": [self.addresses.ledger, self.addresses.staking, self.addresses.stats],
        }
        logs = await self._rpc.call(lambda: self.w3.eth.get_logs(params), "get_logs")
        return [e for e in (self._decode(lg) for lg in logs) if e is not None]

    async def find_settled(self, task_ids: Sequence[bytes], from_block: int | None = None) -> set[bytes]:
        """The ids among `task_ids` that have a TaskSettled event, read from the logs (by task id alone;
        `is_settled(creator, nonce)` is the cheaper check when the creator and nonce are known)."""
        if not task_ids:
            return set()
        abi = next(i for i in self.ledger.abi if i["type"] == "event" and i["name"] == "TaskSettled")
        params = {
            "fromBlock": self.addresses.deploy_block if from_block is None else from_block,
            "toBlock": "latest",
            "address": self.addresses.ledger,
            "topics": [event_abi_to_log_topic(abi), ["0x" + bytes(t).hex() for t in task_ids]],
        }
        logs = await self._rpc.call(lambda: self.w3.eth.get_logs(params), "get_logs")
        return {bytes(lg["topics"][1]) for lg in logs} & {bytes(t) for t in task_ids}

    # --- generic sends (the coordinator's key, or any key: dev and tests) ---------------------------------

    def sender_for(self, key: LocalAccount | bytes | str | None) -> TxSender:
        if key is None:
            return self._sender
        account = key if isinstance(key, LocalAccount) else Account.from_key(key)
        sender = self._senders.get(account.address)
        if sender is None:
            sender = self._senders[account.address] = TxSender(self.w3, account, self.chain_id, self._rpc, self.settings)
        return sender

    async def _transact(self, contract: Any, fn: Any, *, gas: int | None = None, value: int = 0, key: Any = None,
                        data: bytes | None = None) -> bytes:  # fmt: skip
        sender = self.sender_for(key)
        data = encode_call(fn) if data is None else data
        if self.settings.preflight:
            await sender.preflight(contract.address, data, value)
        return await sender.send(contract.address, data, gas=gas or self.settings.call_gas, value=value)

    async def transact(self, contract: str, function: str, *args: Any, key: Any = None, value: int = 0,
                       gas: int | None = None, wait: bool = True) -> Receipt | bytes:
        """Calls `contract.function(*args)` ("TaskLedger", "NodeStaking", "NetworkStats") as `key` (default:
        the client's key); waits for the receipt unless `wait` is False (then returns the tx hash)."""
        c = {"TaskLedger": self.ledger, "NodeStaking": self.staking, "NetworkStats": self.stats_contract}[contract]
        tx = await self._transact(c, getattr(c.functions, function)(*args), gas=gas, value=value, key=key)
        return await self.wait_receipt(tx) if wait else tx

    async def send_value(self, to: str, amount: int, key: Any = None) -> Receipt:
        tx = await self.sender_for(key).send(to_checksum_address(to), b"", gas=21_000, value=amount)
        return await self.wait_receipt(tx)

    # --- creator and node helpers (dev tools and tests; the coordinator never holds these keys) -----------

    async def deposit(self, key: Any, amount: int) -> Receipt:
        return await self.transact("TaskLedger", "deposit", key=key, value=amount)

    async def request_deposit_withdrawal(self, key: Any, amount: int) -> Receipt:
        return await self.transact("TaskLedger", "requestWithdrawal", amount, key=key)

    async def withdraw_deposit(self, key: Any) -> Receipt:
        return await self.transact("TaskLedger", "withdrawDeposit", key=key)

    async def withdraw_credit(self, key: Any) -> Receipt:
        return await self.transact("TaskLedger", "withdrawCredit", key=key)

    async def stake(self, key: Any, amount: int) -> Receipt:
        return await self.transact("NodeStaking", "stake", key=key, value=amount)

    async def request_unstake(self, key: Any) -> Receipt:
        return await self.transact("NodeStaking", "requestUnstake", key=key)

    async def withdraw_stake(self, key: Any) -> Receipt:
        return await self.transact("NodeStaking", "withdraw", key=key)

    async def increase_time(self, seconds: int) -> None:
        """Dev chains only (embedded, Hardhat): moves block time forward and mines a block."""
        await self.w3.provider.make_request("evm_increaseTime", [int(seconds)])
        await self.w3.provider.make_request("evm_mine", [])
