"""The embedded EVM: py-evm (through eth-tester) over a SQLite key-value store, behind an async web3 provider.

- ``SqliteKV`` is a py-evm ``BaseDB`` on one SQLite table. Writes accumulate in an open SQLite transaction
  and ``commit()`` makes them durable; the provider commits after every request, so a request (a mined
  block) is either wholly on disk or not at all.
- ``open_backend`` builds an eth-tester ``PyEVMBackend`` whose chain lives in that store: a new store gets
  a genesis block, a store that already has a canonical head is reopened at it and keeps mining from there.
- ``EmbeddedProvider`` serves web3 requests from that backend on ONE worker thread (py-evm and SQLite are
  not thread safe), so the event loop never blocks on EVM execution. It answers like a JSON-RPC node:
  a revert in ``eth_call``/``eth_estimateGas`` is an error with code 3 and the revert data, and it speaks
  the Hardhat time RPCs ``evm_increaseTime`` and ``evm_mine``.
"""

from __future__ import annotations

import ast
import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from eth.abc import AtomicDatabaseAPI
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.db.backends.base import BaseDB
from eth.db.chain import ChainDB
from eth.exceptions import CanonicalHeadNotFound
from eth.vm.forks import PragueVM
from eth_abi import encode as abi_encode
from eth_keys import KeyAPI
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import get_default_genesis_params
from eth_tester.exceptions import TransactionFailed
from eth_utils.toolz import assoc
from web3.providers.async_base import AsyncBaseProvider
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.providers.eth_tester.defaults import API_ENDPOINTS

from chain._evm_fast import speed_up_pyevm

__all__ = ["EmbeddedProvider", "SqliteKV", "open_backend", "speed_up_pyevm"]

GAS_LIMIT = 60_000_000
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")


class SqliteKV(BaseDB):
    """A py-evm key-value database in one SQLite file (table ``kv``), with a bounded write-through cache."""

    CACHE_ENTRIES = 200_000

    def __init__(self, path: str | Path) -> None:
        self._cache: dict[bytes, bytes | None] = {}
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self._conn.commit()

    def _load(self, key: bytes) -> bytes | None:
        if key in self._cache:
            return self._cache[key]
        row = self._conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        value = None if row is None else bytes(row[0])
        self._remember(key, value)
        return value

    def _remember(self, key: bytes, value: bytes | None) -> None:
        if len(self._cache) >= self.CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = value

    def __getitem__(self, key: bytes) -> bytes:
        value = self._load(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._conn.execute("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", (key, value))
        self._remember(key, bytes(value))

    def __delitem__(self, key: bytes) -> None:
        if self._conn.execute("DELETE FROM kv WHERE k = ?", (key,)).rowcount == 0:
            raise KeyError(key)
        self._remember(key, None)

    def _exists(self, key: bytes) -> bool:
        return self._load(key) is not None

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()
        self._cache.clear()

    def close(self) -> None:
        self._conn.commit()
        self._conn.close()


def _chain_class(chain_id: int) -> type[MiningChain]:
    class HeliumDevChain(MiningChain):
        vm_configuration = ((0, PragueVM),)

        def create_header_from_parent(self, parent_header, **header_params):
            return super().create_header_from_parent(
                parent_header, **assoc(header_params, "gas_limit", parent_header.gas_limit)
            )

        def get_transaction_builder(self):
            return super().get_vm().get_transaction_builder()

    HeliumDevChain.chain_id = chain_id
    return HeliumDevChain


class _PersistentBackend(PyEVMBackend):
    """A PyEVMBackend whose chain is given (built over a persistent store) instead of a fresh in-memory one."""

    def __init__(self, chain: MiningChain, private_keys: list[bytes]) -> None:
        keys = KeyAPI()
        self.account_keys = tuple(keys.PrivateKey(k) for k in private_keys)
        self.chain = chain

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("a persistent chain is never reset")


def open_backend(
    db: AtomicDatabaseAPI, chain_id: int, funded: dict[bytes, int], private_keys: list[bytes]
) -> tuple[PyEVMBackend, bool]:
    """The backend over `db`, and whether it was created now (genesis with the `funded` balances)."""
    speed_up_pyevm()
    cls = _chain_class(chain_id)
    try:
        ChainDB(db).get_canonical_head()
    except CanonicalHeadNotFound:
        state = {addr: {"balance": bal, "nonce": 0, "code": b"", "storage": {}} for addr, bal in funded.items()}
        params = get_default_genesis_params({"gas_limit": GAS_LIMIT, "timestamp": int(time.time())})
        return _PersistentBackend(cls.from_genesis(db, params, state), private_keys), True
    return _PersistentBackend(cls(db), private_keys), False


def open_store(path: Path) -> tuple[SqliteKV, AtomicDB]:
    kv = SqliteKV(path)
    return kv, AtomicDB(kv)


def _revert_data(exc: TransactionFailed) -> bytes:
    """The raw revert data, as a JSON-RPC node reports it (eth-tester stringifies it on some paths)."""
    arg = exc.args[0] if exc.args else b""
    while isinstance(arg, Exception) and arg.args:
        arg = arg.args[0]
    if isinstance(arg, str):
        if arg[:2] in ("b'", 'b"'):
            try:
                return ast.literal_eval(arg)
            except (ValueError, SyntaxError):
                pass
        return _ERROR_STRING_SELECTOR + abi_encode(["string"], [arg])
    return bytes(arg)


class EmbeddedProvider(AsyncEthereumTesterProvider):
    """An async web3 provider over an in-process eth-tester chain, run on one dedicated thread."""

    def __init__(self, tester: EthereumTester, kv: SqliteKV, chain_id: int) -> None:
        AsyncBaseProvider.__init__(self)
        self.ethereum_tester = tester
        self.api_endpoints = API_ENDPOINTS
        self._kv = kv
        self._chain_id = chain_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="helium-evm")
        self._lock = threading.Lock()
        self._closed = False

    async def make_request(self, method: str, params: Any) -> dict:
        if self._closed:
            raise ConnectionError("the embedded chain is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.request_sync, method, params)

    async def run(self, fn: Any, *args: Any) -> Any:
        """Runs `fn(*args)` on the EVM thread (the chain server formats requests there)."""
        if self._closed:
            raise ConnectionError("the embedded chain is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def wire(self, method: str, params: list) -> dict:
        """One JSON-RPC request in the wire format (the chain server's answer)."""
        from chain.server import _answer_sync

        return _answer_sync(self, method, params)

    def request_sync(self, method: str, params: Any) -> dict:
        """Serves one request on the calling thread; callers outside the provider hold no other lock."""
        with self._lock:
            self._current_request_id += 1
            rid = repr(self._current_request_id)
            try:
                return {"id": rid, "jsonrpc": "2.0", "result": self._dispatch(method, list(params or []))}
            except TransactionFailed as exc:
                data = "0x" + _revert_data(exc).hex()
                return {"id": rid, "jsonrpc": "2.0", "error": {"code": 3, "message": "execution reverted", "data": data}}
            except (KeyError, NotImplementedError) as exc:
                return {"id": rid, "jsonrpc": "2.0", "error": {"code": -32601, "message": f"{method}: {exc}"}}
            except Exception as exc:  # validation errors of eth-tester: a JSON-RPC node answers -32000
                return {"id": rid, "jsonrpc": "2.0", "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
            finally:
                self._kv.commit()

    def _dispatch(self, method: str, params: list) -> Any:
        tester = self.ethereum_tester
        if method == "eth_chainId":
            return hex(self._chain_id)
        if method == "evm_increaseTime":
            latest = tester.get_block_by_number("latest")["timestamp"]
            seconds = int(params[0], 16) if isinstance(params[0], str) else int(params[0])
            tester.time_travel(max(latest + seconds, tester.get_block_by_number("pending")["timestamp"]))
            return hex(seconds)
        if method == "evm_mine":
            self._refresh_pending_timestamp()
            tester.mine_blocks(1)
            return "0x0"
        if method in ("eth_sendRawTransaction", "eth_sendTransaction"):
            self._refresh_pending_timestamp()
        namespace, _, endpoint = method.partition("_")
        delegator = self.api_endpoints[namespace][endpoint]
        return delegator(tester, params)

    def _refresh_pending_timestamp(self) -> None:
        """The pending block was opened when the previous one was mined; a transaction sent after an idle
        spell must see the current time (block.timestamp drives deadlines and delays), never an older one."""
        chain = self.ethereum_tester.backend.chain
        now = int(time.time())
        if chain.header.timestamp < now:
            chain.header = chain.header.copy(timestamp=now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        with self._lock:
            self._kv.close()

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return not self._closed
