"""JSON-RPC over the revm chain: the methods the Helium client, web3 and the tests use, answered in the wire
format (quantities and bytes as 0x-hex) like a Hardhat node, and an async web3 provider for in-process use.

- ``RevmNode.wire(method, params)`` answers one request: ``{"result": ...}`` or ``{"error": ...}``. A revert
  in ``eth_call``/``eth_estimateGas`` is error code 3 with the revert data (as Hardhat and the py-evm backend
  answer); a refused transaction is -32000 with a node's words ("nonce too low", "already known", ...).
  It speaks Hardhat's ``evm_increaseTime`` and ``evm_mine``.
- ``RevmProvider`` serves a ``RevmNode`` to web3 in this process, on one worker thread (pyrevm and SQLite are
  not thread safe), params JSON-encoded as an HTTP provider would send them.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eth_account import Account
from web3._utils.encoding import Web3JsonEncoder
from web3.providers.async_base import AsyncBaseProvider

from chain._revm import GAS_LIMIT, Reverted, RevmChain, TxRejected

__all__ = ["RevmNode", "RevmProvider"]


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    return int(value, 16) if isinstance(value, str) else int(value)


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


def _addr(value: Any) -> bytes | None:
    return _bytes(value) if value else None


class RevmNode:
    """The JSON-RPC face of a RevmChain. `keys` are the dev accounts that ``eth_sendTransaction`` signs for."""

    def __init__(self, chain: RevmChain, keys: list[bytes]) -> None:
        self.chain = chain
        self._accounts = {bytes.fromhex(a.address[2:]): a for a in (Account.from_key(k) for k in keys)}
        self._lock = threading.Lock()
        self._methods = {
            "eth_chainId": lambda p: hex(chain.chain_id),
            "net_version": lambda p: str(chain.chain_id),
            "web3_clientVersion": lambda p: "helium-revm/1",
            "eth_blockNumber": lambda p: hex(chain.number),
            "eth_accounts": lambda p: [a.address for a in self._accounts.values()],
            "eth_gasPrice": lambda p: hex(chain.pending_env()[2] + 10**9),
            "eth_maxPriorityFeePerGas": lambda p: hex(10**9),
            "eth_getBalance": lambda p: self._at(p, 1, lambda: hex(chain.balance(_bytes(p[0])))),
            "eth_getTransactionCount": lambda p: self._at(p, 1, lambda: hex(chain.nonce(_bytes(p[0])))),
            "eth_getCode": lambda p: self._at(p, 1, lambda: "0x" + chain.code(_bytes(p[0])).hex()),
            "eth_getStorageAt": lambda p: self._at(p, 2, lambda: "0x" + chain.storage_at(_bytes(p[0]), _int(p[1]))
                                                   .to_bytes(32, "big").hex()),  # fmt: skip
            "eth_call": lambda p: self._at(p, 1, lambda: "0x" + self._call(p[0]).output.hex()),
            "eth_estimateGas": lambda p: hex(self._estimate(p[0])),
            "eth_sendRawTransaction": lambda p: "0x" + chain.send_raw(_bytes(p[0])).hex(),
            "eth_sendTransaction": lambda p: self._send(p[0]),
            "eth_getBlockByNumber": lambda p: self._block(self._number(p[0]), bool(p[1]) if len(p) > 1 else False),
            "eth_getBlockByHash": lambda p: self._full(chain.store.block_by_hash(_bytes(p[0])),
                                                      bool(p[1]) if len(p) > 1 else False),  # fmt: skip
            "eth_getTransactionByHash": lambda p: self._tx(p[0], 0),
            "eth_getTransactionReceipt": lambda p: self._tx(p[0], 1),
            "eth_getLogs": lambda p: self._logs(p[0] if p else {}),
            "evm_increaseTime": lambda p: self._increase(p[0]),
            "evm_mine": lambda p: (chain.mine(), "0x0")[1],
        }

    def wire(self, method: str, params: list) -> dict:
        """One JSON-RPC request: {"result": ...} or {"error": {...}}."""
        fn = self._methods.get(method)
        if fn is None:
            return {"error": {"code": -32601, "message": f"the method {method} does not exist/is not available"}}
        with self._lock:
            try:
                return {"result": fn(list(params or []))}
            except Reverted as exc:
                return {"error": {"code": 3, "message": "execution reverted", "data": "0x" + exc.data.hex()}}
            except TxRejected as exc:
                return {"error": {"code": -32000, "message": str(exc)}}
            except (IndexError, KeyError, TypeError, ValueError) as exc:
                return {"error": {"code": -32602, "message": f"{method}: invalid params: {exc!r}"}}

    # --- helpers --------------------------------------------------------------------------------------

    def _number(self, tag: Any) -> int:
        if tag in (None, "latest", "pending", "safe", "finalized"):
            return self.chain.number
        if tag == "earliest":
            return 0
        return _int(tag)

    def _at(self, params: list, i: int, fn: Any) -> Any:
        """State reads: this node keeps the current state only (like a pruned node)."""
        tag = params[i] if len(params) > i else "latest"
        if isinstance(tag, dict):
            tag = tag.get("blockNumber") or tag.get("blockHash") and "latest"
        if tag not in (None, "latest", "pending", "safe", "finalized") and _int(tag) != self.chain.number:
            raise TxRejected(f"historical state of block {tag} is not available (only the latest)")
        return fn()

    def _call_args(self, tx: dict) -> tuple[bytes, bytes | None, bytes, int, int | None]:
        sender = _addr(tx.get("from")) or next(iter(self._accounts), b"\x00" * 20)
        data = _bytes(tx.get("data") or tx.get("input"))
        return sender, _addr(tx.get("to")), data, _int(tx.get("value")), _int(tx["gas"]) if tx.get("gas") else None

    def _call(self, tx: dict):
        return self.chain.call(*self._call_args(tx))

    def _estimate(self, tx: dict) -> int:
        """The least gas limit under which the call succeeds (binary search from the gas it used)."""
        sender, to, data, value, gas = self._call_args(tx)
        cap = gas or GAS_LIMIT
        lo = self.chain.call(sender, to, data, value, cap).gas_used - 1
        hi = cap
        while hi - lo > 1:
            mid = (lo + hi) // 2 if hi - lo > 64 or lo < 0 else lo + 1
            try:
                self.chain.call(sender, to, data, value, mid)
                hi = mid
            except (Reverted, TxRejected):
                lo = mid
        return hi

    def _send(self, tx: dict) -> str:
        sender = _bytes(tx["from"])
        account = self._accounts.get(sender)
        if account is None:
            raise TxRejected(f"unknown account 0x{sender.hex()}")
        base = self.chain.pending_env()[2]
        signed = account.sign_transaction({
            "type": 2, "chainId": self.chain.chain_id, "nonce": _int(tx.get("nonce"), self.chain.nonce(sender)),
            "gas": _int(tx.get("gas"), 3_000_000), "value": _int(tx.get("value")),
            "maxFeePerGas": _int(tx.get("maxFeePerGas"), 2 * base + 10**9),
            "maxPriorityFeePerGas": _int(tx.get("maxPriorityFeePerGas"), 10**9),
            "data": _bytes(tx.get("data") or tx.get("input")), **({"to": tx["to"]} if tx.get("to") else {}),
        })  # fmt: skip
        return "0x" + self.chain.send_raw(bytes(signed.raw_transaction)).hex()

    def _increase(self, seconds: Any) -> str:
        self.chain.increase_time(_int(seconds))
        return hex(_int(seconds))

    def _block(self, number: int, full: bool) -> dict | None:
        return self._full(self.chain.head if number == self.chain.number else self.chain.store.block(number), full)

    def _full(self, block: dict | None, full: bool) -> dict | None:
        if block is None or not full:
            return block
        return {**block, "transactions": [self._tx(h, 0) for h in block["transactions"]]}

    def _tx(self, tx_hash: Any, which: int) -> dict | None:
        found = self.chain.store.tx(_bytes(tx_hash))
        return None if found is None else found[which]

    def _logs(self, flt: dict) -> list[dict]:
        if flt.get("blockHash"):
            block = self.chain.store.block_by_hash(_bytes(flt["blockHash"]))
            if block is None:
                return []
            lo = hi = _int(block["number"])
        else:
            lo, hi = self._number(flt.get("fromBlock", "latest")), self._number(flt.get("toBlock", "latest"))
        address = flt.get("address")
        addresses = None if address is None else [a.lower() for a in ([address] if isinstance(address, str) else address)]
        topics: list[list[str] | None] = []
        for t in flt.get("topics") or []:
            topics.append(None if t is None else [x.lower() for x in ([t] if isinstance(t, str) else t)])
        return self.chain.store.logs(lo, hi, addresses, topics)

    def close(self) -> None:
        with self._lock:
            self.chain.store.close()


class RevmProvider(AsyncBaseProvider):
    """An async web3 provider over a RevmNode in this process, run on one dedicated thread."""

    def __init__(self, node: RevmNode) -> None:
        super().__init__()
        self.node = node
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="helium-revm")
        self._closed = False
        self._next_id = 0

    async def make_request(self, method: str, params: Any) -> dict:
        wire = json.loads(json.dumps(list(params or []), cls=Web3JsonEncoder))
        self._next_id += 1
        return {"jsonrpc": "2.0", "id": self._next_id, **await self.run(self.node.wire, method, wire)}

    async def run(self, fn: Any, *args: Any) -> Any:
        """Runs `fn(*args)` on the chain's thread (the chain server answers requests there)."""
        if self._closed:
            raise ConnectionError("the embedded chain is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def wire(self, method: str, params: list) -> dict:
        return self.node.wire(method, params)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self.node.close()

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return not self._closed
