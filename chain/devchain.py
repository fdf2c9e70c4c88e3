"""The embedded dev chain: an in-process EVM whose state persists in a directory.

Two EVM backends (``evm=``): ``"revm"`` (the default: revm, the Rust EVM, through pyrevm; ``chain._revm``) and
``"pyevm"`` (py-evm through eth-tester; ``chain._evm``). Both charge a real EVM's gas (the parity tests run the
same calls on both and on Hardhat); revm runs a settlement some 50x faster. A directory keeps the backend it
was created with (``devchain.json`` names it; a directory from before the choice existed is py-evm's).

``await DevChain.open(data_dir)`` on an empty directory creates dev keys (admin, coordinator, creator,
faucet), a genesis block that funds them, deploys the contracts (coordinator = the dev coordinator key),
and gives the creator a ledger deposit; on a directory that has a chain it reopens it at its head, with
every balance, stake, deposit and settled task as it was, and keeps mining from there.

``await DevChain.spawn(data_dir)`` runs the same chain in a child process (``chain.server``: a JSON-RPC
node on loopback, so the interpreted EVM gets a core of its own) and talks to it over HTTP; the object
offers the same API (``client``, ``fund``, ``fund_and_stake``, ``increase_time``, ``close``), and
``restart()`` / ``server.kill()`` let tests stop and restart that node on the same directory and port.

Files in `data_dir`: ``chain.sqlite`` (revm: state, blocks, receipts, logs) or ``evm.sqlite`` (the py-evm
key-value store), ``devchain.json`` (chain id, dev keys,
contract addresses; mode 0600), ``lock`` (one process at a time), ``chain-server.log`` (a spawned child's log).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester
from web3 import AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from chain._evm import EmbeddedProvider, open_backend, open_store
from chain._revm import RevmChain
from chain._revm_rpc import RevmNode, RevmProvider
from chain._revm_store import RevmStore
from chain.client import ChainClient, http_provider, lean_web3
from chain.deploy import ETHER, DeploySettings, deploy_contracts
from chain.errors import DevChainError
from chain.models import ClientSettings, ContractAddresses, Receipt
from chain.signing import Domain

__all__ = ["DEFAULT_EVM", "DEV_CHAIN_ID", "EVMS", "DevChain", "DevKeys"]

log = structlog.get_logger(__name__)
DEV_CHAIN_ID = 1337
_ACCOUNT_FUNDS = 1_000_000 * ETHER
_FAUCET_FUNDS = 1_000_000_000 * ETHER
_CREATOR_DEPOSIT = 10_000 * ETHER
EVMS = ("revm", "pyevm")
DEFAULT_EVM = "revm"
_STATE_FILE = {"revm": "chain.sqlite", "pyevm": "evm.sqlite"}


@dataclass(frozen=True)
class DevKeys:
    admin: LocalAccount
    coordinator: LocalAccount
    creator: LocalAccount  # a funded creator / gateway key, with a ledger deposit
    faucet: LocalAccount  # funds node keys (fund_and_stake)

    def as_dict(self) -> dict[str, str]:
        return {k: "0x" + bytes(getattr(self, k).key).hex() for k in ("admin", "coordinator", "creator", "faucet")}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> DevKeys:
        return cls(**{k: Account.from_key(d[k]) for k in ("admin", "coordinator", "creator", "faucet")})

    @classmethod
    def create(cls) -> DevKeys:
        return cls(admin=Account.create(), coordinator=Account.create(), creator=Account.create(), faucet=Account.create())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock_dir(data: Path) -> int:
    data.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(data / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(lock_fd)
        raise DevChainError(f"dev chain {data} is open in another process") from exc
    return lock_fd


def _read_meta(data: Path, chain_id: int, evm: str) -> dict[str, Any]:
    meta_path = data / "devchain.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta.setdefault("evm", "pyevm")  # created before the backend was a choice
        return meta
    for name in _STATE_FILE.values():
        if (data / name).exists():
            raise DevChainError(f"dev chain {data}: {name} without devchain.json; delete the directory")
    if evm not in EVMS:
        raise DevChainError(f"evm must be one of {EVMS}, got {evm!r}")
    meta = {"chain_id": chain_id, "keys": DevKeys.create().as_dict(), "addresses": None, "evm": evm}
    _write_json(meta_path, meta)
    return meta


def _open_provider(data: Path, evm: str, chain_id: int, funded: dict[bytes, int],
                   keys: list[bytes]) -> tuple[AsyncBaseProvider, bool]:  # fmt: skip
    """The web3 provider over the chain in `data` on the `evm` backend, and whether it was created now."""
    if evm == "revm":
        store = RevmStore(data / _STATE_FILE["revm"])
        try:
            chain, created = RevmChain.open(store, chain_id, funded)
        except BaseException:
            store.close()
            raise
        return RevmProvider(RevmNode(chain, keys)), created
    if evm != "pyevm":
        raise DevChainError(f"dev chain {data}: unknown evm {evm!r} in devchain.json")
    kv, db = open_store(data / _STATE_FILE["pyevm"])
    backend, created = open_backend(db, chain_id, funded, keys)
    kv.commit()
    return EmbeddedProvider(EthereumTester(backend), kv, chain_id), created


class DevChain:
    """An embedded, persistent EVM with the Helium contracts deployed. Use ``await DevChain.open(dir)``
    (in this process) or ``await DevChain.spawn(dir)`` (in a child process, over JSON-RPC)."""

    def __init__(self, data_dir: Path, provider: AsyncBaseProvider, keys: DevKeys, addresses: ContractAddresses,
                 chain_id: int, lock_fd: int, server=None) -> None:  # fmt: skip
        self.data_dir = data_dir
        self.provider = provider
        self.w3 = lean_web3(provider)
        self.keys = keys
        self.addresses = addresses
        self.chain_id = chain_id
        self.domain = Domain(chain_id=chain_id, verifying_contract=addresses.ledger)
        self.server = server  # chain.server.ChainServerProcess when spawned
        self._lock_fd = lock_fd
        self._faucet: ChainClient | None = None

    @classmethod
    async def spawn(
        cls,
        data_dir: str | os.PathLike,
        *,
        port: int = 0,
        ready_timeout: timedelta = timedelta(seconds=90),
        rpc_timeout: timedelta = timedelta(seconds=30),
        evm: str = DEFAULT_EVM,
    ) -> DevChain:
        """The DevChain of `data_dir` served by a child process (`python -m chain serve`), reached over
        HTTP on loopback; created there on first use like `open`. `close()` stops the child."""
        from chain.server import ChainServerProcess

        data = Path(data_dir)
        server = ChainServerProcess(data, port=port, ready_timeout=ready_timeout, evm=evm)
        url = await server.start()
        try:
            meta = json.loads((data / "devchain.json").read_text())
            provider = await http_provider(url, rpc_timeout.total_seconds())
            chain = cls(data, provider, DevKeys.from_dict(meta["keys"]), ContractAddresses(**meta["addresses"]),
                        int(meta["chain_id"]), -1, server)  # fmt: skip
        except BaseException:
            await server.stop()
            raise
        log.info("devchain_spawned", data_dir=str(data), rpc=url, pid=server.proc.pid)
        return chain

    async def restart(self) -> None:
        """Spawned chains: stops the child if it still runs and starts it again on the same directory and
        port (the same URL: clients keep working once it answers)."""
        if self.server is None:
            raise DevChainError("restart: this DevChain runs in this process")
        await self.server.stop()
        await self.server.start()

    @classmethod
    async def open(
        cls,
        data_dir: str | os.PathLike,
        *,
        deploy_settings: DeploySettings = DeploySettings(),
        chain_id: int = DEV_CHAIN_ID,
        evm: str = DEFAULT_EVM,
    ) -> DevChain:
        """The chain of `data_dir` in this process; a new directory gets a chain on the `evm` backend."""
        data = Path(data_dir)
        lock_fd = _lock_dir(data)
        try:
            return await cls._open_locked(data, deploy_settings, chain_id, evm, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    async def _open_locked(cls, data: Path, deploy_settings: DeploySettings, chain_id: int, evm: str,
                           lock_fd: int) -> DevChain:  # fmt: skip
        meta_path = data / "devchain.json"
        meta = _read_meta(data, chain_id, evm)
        keys = DevKeys.from_dict(meta["keys"])
        chain_id = int(meta["chain_id"])
        funded = {bytes.fromhex(k.address[2:]): _ACCOUNT_FUNDS for k in (keys.admin, keys.coordinator, keys.creator)}
        funded[bytes.fromhex(keys.faucet.address[2:])] = _FAUCET_FUNDS
        provider, created = _open_provider(data, meta["evm"], chain_id, funded, [bytes(keys.faucet.key)])
        if meta["addresses"] is None:
            w3 = AsyncWeb3(provider)
            addresses = await deploy_contracts(w3, keys.admin, keys.coordinator.address, deploy_settings)
            meta["addresses"] = addresses.as_dict()
            _write_json(meta_path, meta)
            chain = cls(data, provider, keys, addresses, chain_id, lock_fd)
            await chain.client(keys.creator).deposit(keys.creator, _CREATOR_DEPOSIT)
            log.info("devchain_created", data_dir=str(data), chain_id=chain_id, **addresses.as_dict())
            return chain
        addresses = ContractAddresses(**meta["addresses"])
        chain = cls(data, provider, keys, addresses, chain_id, lock_fd)
        log.info("devchain_reopened", data_dir=str(data), chain_id=chain_id, created=created,
                 block=await chain.w3.eth.block_number)  # fmt: skip
        return chain

    def client(self, key: LocalAccount | bytes | str | None = None, settings: ClientSettings | None = None) -> ChainClient:
        """A ChainClient over this chain, sending as `key` (default: the dev coordinator key)."""
        account = key if isinstance(key, LocalAccount) else Account.from_key(key) if key else self.keys.coordinator
        return ChainClient(self.w3, account, self.addresses, self.chain_id, settings or ClientSettings())

    async def fund(self, address: str, amount: int) -> Receipt:
        """Sends `amount` wei from the faucet."""
        if self._faucet is None:
            self._faucet = self.client(self.keys.faucet)
        return await self._faucet.send_value(address, amount)

    async def fund_and_stake(self, node_key: LocalAccount | bytes | str, stake: int | None = None) -> Receipt:
        """Funds a node key (stake + 1 token for gas) and stakes `stake` (default: the minimum stake) from it,
        so a dev worker can join."""
        account = node_key if isinstance(node_key, LocalAccount) else Account.from_key(node_key)
        client = self.client(account)
        amount = stake if stake is not None else await client.min_stake()
        await self.fund(account.address, amount + ETHER)
        return await client.stake(account, amount)

    async def increase_time(self, seconds: int) -> None:
        await self.provider.make_request("evm_increaseTime", [int(seconds)])

    async def close(self) -> None:
        if self.server is not None:
            await self.provider.disconnect()
            # SIGKILL after 5 s is safe: the store commits block by block (the kill -9 tests rely on it).
            await self.server.stop(timedelta(seconds=5))
            return
        self.provider.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def __aenter__(self) -> DevChain:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
