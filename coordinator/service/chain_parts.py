"""The full network protocol on a chain: the `ProtocolParts` factory for `chain = "embedded"` or a URL.

    parts = await chain_parts(config, store, key)                 # CoordinatorApp's parts_factory
    parts = await chain_parts(config, store, key, devchain=dc)    # `helium dev`: an open DevChain

Embedded: opens the DevChain at `<config.data_dir>/chain` (unless one is given), in a child process
(`DevChain.spawn`) when `config.chain_process` (the default), and the coordinator signs with that chain's
coordinator-role key. JSON-RPC URL: `ChainClient.connect(url, key, addresses)` with the coordinator's own
key (it must hold COORDINATOR_ROLE); the deployed addresses come from the JSON file named by
`HELIUM_CHAIN_ADDRESSES`, else `<config.data_dir>/chain-addresses.json`, holding `{"stats": ..., "staking": ..., "ledger": ..., "deploy_block": n}` (what `chain.deploy` returns).

Protocol settings load from `[protocol]` (ProtocolSettings) and `[settlement]` (SettlementSettings) of
the TOML file / HELIUM_* environment, with docs/DESIGN.md's defaults.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog

from chain.client import ChainClient
from chain.errors import ChainError
from chain.models import ClientSettings, ContractAddresses
from coordinator.domain.models import NodeState
from coordinator.errors import NotStaked, Unavailable
from coordinator.service.protocol_hooks import QosTracker, ValuePricer, WeightedSelector
from coordinator.service.settings import ProtocolSettings
from coordinator.service.settlement import TRANSIENT_ERRORS, BatchSettlement, SettlementSettings

__all__ = ["ChainDeposits", "ChainStakes", "ChainTuning", "chain_parts"]

log = structlog.get_logger("coordinator.chain_parts")
ADDRESSES_ENV = "HELIUM_CHAIN_ADDRESSES"


@dataclass(frozen=True)
class ChainTuning:
    # A creator's on-chain deposit is re-read at most this often (fees settled since are subtracted).
    deposit_cache_ttl: timedelta = timedelta(seconds=2)
    # The last deposit / stake read stays usable this long (chain busy or unreachable); must stay well
    # below the ledger's withdrawal delay (1 h).
    stale_ok: timedelta = timedelta(minutes=5)
    # eth_call each transaction of the embedded chain before sending it. Off: the embedded EVM is
    # interpreted and a preflight doubles the CPU of a settlement; a reverted batch is replayed as an
    # eth_call to name the culprit instead. JSON-RPC chains always preflight (no gas spent on reverts).
    embedded_preflight: bool = False
    # How often the NetworkStats counters are read for GetStats.
    stats_refresh: timedelta = timedelta(seconds=10)


class ChainStakes:
    """hooks.StakeCheck: a node may join when its stake >= minStake and it has no unstake pending (a node that
    asked to leave takes no new work: its stake stays slashable only until the unstake delay ends)."""

    def __init__(self, client: ChainClient, tuning: ChainTuning) -> None:
        self.client = client
        self.tuning = tuning
        self.known: dict[str, tuple[int, float]] = {}
        self._min: int | None = None

    async def check(self, address: str) -> None:
        try:
            if self._min is None:
                self._min = await self.client.min_stake()
            info = await self.client.node_info(address)
            if info.unlock_at:
                raise NotStaked(f"join while unstaking: node {address} asked to unstake (withdrawable at "
                                f"{info.unlock_at}); stake again to cancel it")
            stake = 0 if info.slashed else info.stake
            self.known[address] = (stake, time.monotonic())
        except (ChainError, *TRANSIENT_ERRORS) as exc:
            cached = self.known.get(address)
            if cached is None or time.monotonic() - cached[1] > self.tuning.stale_ok.total_seconds() or self._min is None:
                raise Unavailable(f"the chain is unavailable to check the stake of {address}: {exc}") from exc
            stake = cached[0]
        if stake < self._min:
            raise NotStaked(f"join without stake: node {address} has {stake} wei staked, the minimum is {self._min} wei")

    def stake_of(self, address: str) -> int | None:
        cached = self.known.get(address)
        return cached[0] if cached else None

    def forget(self, address: str) -> None:
        self.known[address] = (0, time.monotonic())


class ChainDeposits:
    """hooks.DepositCheck: the creator's available deposit on the ledger.

    The first read of a creator waits for the chain; later reads answer from the last value at once and
    refresh it in the background when it is older than `deposit_cache_ttl`. Fees settled since a read
    are subtracted from it (counted from the moment the read started, so a settlement racing the read is
    subtracted even if the read already saw it: the check errs on the side of refusing). A deposit can
    only shrink by settlement or by a withdrawal, which waits out the ledger's delay, so a value that is
    seconds old never lets a fee through that settlement could not take.
    """

    def __init__(self, client: ChainClient, tuning: ChainTuning) -> None:
        self.client = client
        self.tuning = tuning
        self._cache: dict[str, tuple[int, float, int]] = {}  # creator -> (value, read_at, settled total then)
        self._settled: dict[str, int] = {}
        self._refreshing: dict[str, asyncio.Task] = {}

    async def _read(self, creator: str) -> tuple[int, float, int]:
        start = self._settled.get(creator, 0)
        value = await self.client.deposit_of(creator)
        entry = self._cache[creator] = (value, time.monotonic(), start)
        return entry

    def _refresh(self, creator: str) -> None:
        if creator in self._refreshing:
            return

        async def job() -> None:
            try:
                await self._read(creator)
            except (ChainError, *TRANSIENT_ERRORS) as exc:
                log.info("deposit_refresh_failed", creator=creator, error=str(exc))
            finally:
                self._refreshing.pop(creator, None)

        self._refreshing[creator] = asyncio.create_task(job())

    async def available(self, creator: str) -> int | None:
        entry = self._cache.get(creator)
        now = time.monotonic()
        if entry is None:
            try:
                entry = await self._read(creator)
            except (ChainError, *TRANSIENT_ERRORS) as exc:
                raise Unavailable(f"the chain is unavailable to read the deposit of {creator}: {exc}") from exc
        elif now - entry[1] > self.tuning.stale_ok.total_seconds():
            try:
                entry = await self._read(creator)
            except (ChainError, *TRANSIENT_ERRORS) as exc:
                raise Unavailable(f"the chain is unavailable to read the deposit of {creator}: {exc}") from exc
        elif now - entry[1] > self.tuning.deposit_cache_ttl.total_seconds():
            self._refresh(creator)
        value, _, settled_then = entry
        return max(0, value - (self._settled.get(creator, 0) - settled_then))

    def settled(self, creator: str, fee: int) -> None:
        self._settled[creator] = self._settled.get(creator, 0) + fee


def _addresses(config) -> ContractAddresses:
    path = Path(os.environ.get(ADDRESSES_ENV) or Path(config.data_dir) / "chain-addresses.json")
    if not path.exists():
        raise ValueError(f"chain {config.chain}: contract addresses file {path} not found (set {ADDRESSES_ENV})")
    return ContractAddresses(**json.loads(path.read_text()))


def _load(cls, section: str):
    from helium.config import load_settings

    try:
        return load_settings(cls, section=section)
    except Exception as exc:  # a bad file or variable names the field; defaults would hide it
        raise ValueError(f"[{section}] settings: {exc}") from exc


async def chain_parts(config, store, key, devchain=None, *, client: ChainClient | None = None,
                      protocol: ProtocolSettings | None = None, settlement: SettlementSettings | None = None,
                      tuning: ChainTuning | None = None, rng=None):  # fmt: skip
    """ProtocolParts for the full protocol: priced queue, weighted selection, QoS, stake and deposit checks,
    batched settlement with slashes and kick-outs, NetworkStats."""
    from coordinator.server import ProtocolParts

    protocol = protocol or _load(ProtocolSettings, "protocol")
    settlement = settlement or _load(SettlementSettings, "settlement")
    tuning = tuning or ChainTuning()
    opened = None
    signer = None
    if client is None:
        if config.chain == "embedded":
            if devchain is None:
                from chain.devchain import DevChain

                data = Path(config.data_dir) / "chain"
                devchain = opened = await (DevChain.spawn(data) if config.chain_process else DevChain.open(data))
            client = devchain.client(settings=ClientSettings(preflight=tuning.embedded_preflight))
            signer = devchain.keys.coordinator
        else:
            client = await ChainClient.connect(config.chain, key, _addresses(config))
    elif devchain is not None:
        signer = devchain.keys.coordinator
    if signer is None and client.address != key.address:
        signer = client.account

    stakes = ChainStakes(client, tuning)
    deposits = ChainDeposits(client, tuning)
    batches = BatchSettlement(store, client, settlement, on_settled=deposits.settled,
                              phash_threshold=config.phash_threshold)  # fmt: skip
    pricer = ValuePricer(protocol, store)

    def kick_due(address: str, reason: str) -> None:
        # Deferred: the dispatcher is inside a QoS update of this node; act once it has saved it.
        asyncio.get_running_loop().call_soon(_kick, address, reason)

    def _kick(address: str, reason: str) -> None:
        d = batches.dispatcher
        if d is not None:
            try:
                d.set_node_state(address, NodeState.KICKED_OUT, reason)
            except Exception:
                log.exception("kick_state_failed", node=address)
        stakes.forget(address)
        batches.kick(address, reason)

    qos = QosTracker(protocol, on_kick_due=kick_due, stake_of=stakes.stake_of)

    async def on_kick(address: str) -> None:  # AdminService.KickNode (the state is already KICKED_OUT)
        stakes.forget(address)
        batches.kick(address, "kicked out by the operator")

    counters: dict = {}

    async def refresh_stats(dispatcher) -> None:
        while True:
            try:
                counters.update(vars(await client.stats()))
            except (ChainError, *TRANSIENT_ERRORS) as exc:
                log.info("network_stats_unavailable", error=str(exc))
            await asyncio.sleep(tuning.stats_refresh.total_seconds())

    def stats_source() -> dict:
        out = batches.stats()
        out["chain"] = {k: str(v) for k, v in counters.items()}
        return out

    async def close() -> None:
        pricer.save()
        if opened is not None:
            await opened.close()
        elif devchain is None:
            await client.close()

    log.info("chain_parts_ready", chain=config.chain, coordinator=client.address, ledger=client.addresses.ledger)
    return ProtocolParts(
        domain=client.domain, pricer=pricer, selector=WeightedSelector(protocol, rng), stakes=stakes,
        deposits=deposits, settlement=batches, qos=qos, on_kick=on_kick, stats_source=stats_source,
        background=[batches.run, refresh_stats], close=close, key=signer,
    )  # fmt: skip
