"""Transaction machinery of the chain client: bounded RPC retries, revert decoding, one sender's nonces,
and fast ABI paths.

Every RPC goes through ``Rpc.call``: a deadline per attempt (``rpc_timeout``) and tenacity retries, bounded
(``rpc_attempts``), of transient transport errors only; a JSON-RPC error answer is not retried.
``TxSender`` signs EIP-1559 transactions for one key under an asyncio lock with a local nonce. Resending the
same signed bytes is idempotent; when the node refuses a nonce, the sender resyncs from the chain's pending
count and re-signs once.

web3's generic formatters cost milliseconds per settled task on the coordinator's event loop (a batch of 50
carries ~250 values in and ~200 logs out), so ``encode_call`` ABI-encodes with eth_abi directly,
``decode_event`` decodes a log with eth_abi directly, and ``TxSender.wait`` reads a JSON-RPC node's receipt
as it comes; each gives what web3 gives (tests compare them) and falls back to web3 where it would not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from eth_utils.abi import collapse_if_tuple, function_abi_to_4byte_selector
from hexbytes import HexBytes
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError

from chain._abi import encoder, word_decoder
from chain._artifacts import load_artifact
from chain.errors import ChainTimeout, ChainUnavailable, ContractRevert, RpcRefused
from chain.models import ClientSettings

log = structlog.get_logger(__name__)
T = TypeVar("T")

TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError, OSError)
_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")
_NONCE_WORDS = ("nonce too low", "nonce too high", "invalid nonce", "transaction nonce", "nonce has already been used", "expected nonce")
_KNOWN_WORDS = ("already known", "known transaction", "already imported")


def _error_table(names: tuple[str, ...]) -> dict[bytes, tuple[str, list[str], list[str]]]:
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in names:
        for item in load_artifact(name).abi:
            if item["type"] != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            sel = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[sel] = (item["name"], types, [i["name"] or f"arg{n}" for n, i in enumerate(item["inputs"])])
    return table


_ERRORS = _error_table(("TaskLedger", "NodeStaking", "NetworkStats"))


def decode_revert(data: bytes) -> tuple[str, dict[str, Any]]:
    """(error name, args) of revert data; ("", {}) when the data is empty or unknown."""
    if len(data) < 4:
        return "", {}
    sel, body = data[:4], data[4:]
    try:
        if sel == _ERROR_STRING:
            return "Error", {"message": abi_decode(["string"], body)[0]}
        if sel == _PANIC:
            return "Panic", {"code": abi_decode(["uint256"], body)[0]}
        if sel in _ERRORS:
            name, types, names = _ERRORS[sel]
            return name, dict(zip(names, abi_decode(types, body), strict=True))
    except Exception:  # malformed revert data: report it undecoded
        pass
    return "", {}


def revert_from(exc: Exception) -> ContractRevert:
    raw = getattr(exc, "data", None)
    if isinstance(raw, dict):  # Hardhat nests it: {"message": ..., "data": "0x..."}
        raw = raw.get("data")
    data = bytes.fromhex(raw[2:]) if isinstance(raw, str) and raw.startswith("0x") else b""
    name, args = decode_revert(data)
    shown = ", ".join(f"{k}={v.hex() if isinstance(v, bytes) else v}" for k, v in args.items())
    return ContractRevert(f"reverted: {name or exc}({shown})", error=name, args=args, data=data)


_SELECTORS: dict[str, tuple[bytes, list[str], Any]] = {}


def encode_call(fn: Any) -> bytes:
    """The calldata of a bound web3 contract function (``contract.functions.f(*args)``): chain._abi's
    encoder, else eth_abi, else web3's own path."""
    try:
        entry = _SELECTORS.get(fn.signature)
        if entry is None:
            types = [collapse_if_tuple(i) for i in fn.abi["inputs"]]
            entry = _SELECTORS[fn.signature] = (function_abi_to_4byte_selector(fn.abi), types, encoder(types))
        if not fn.kwargs:
            try:
                return entry[0] + entry[2](fn.args)
            except ValueError:  # a value the lean encoder leaves to eth_abi
                return entry[0] + abi_encode(entry[1], fn.args)
    except Exception:  # a value eth_abi takes only after web3's normalizers (ENS names, hex strings, ...)
        pass
    return bytes.fromhex(fn._encode_transaction_data()[2:])


_FUNCTIONS: dict[tuple[int, str], tuple[bytes, list[str], Any]] = {}


def encode_function(abi: list[dict], name: str, args: tuple) -> bytes:
    """The calldata of `name(*args)` of a contract `abi` (one function of that name), without building a
    web3 ContractFunction (whose argument checks cost more than the encoding); ValueError for values only
    web3's normalizers take (then use ``encode_call``)."""
    entry = _FUNCTIONS.get((id(abi), name))
    if entry is None:
        found = [i for i in abi if i["type"] == "function" and i["name"] == name]
        if len(found) != 1:
            raise ValueError(f"{name}: {len(found)} functions of that name")
        types = [collapse_if_tuple(i) for i in found[0]["inputs"]]
        entry = _FUNCTIONS[(id(abi), name)] = (function_abi_to_4byte_selector(found[0]), types, encoder(types))
    try:
        return entry[0] + entry[2](args)
    except ValueError:
        try:
            return entry[0] + abi_encode(entry[1], args)
        except Exception as exc:
            raise ValueError(f"{name}: {exc}") from exc


class _EventDecoder:
    def __init__(self, abi: dict) -> None:
        self.name = abi["name"]
        inputs = abi["inputs"]
        self.indexed = [(i["name"], collapse_if_tuple(i)) for i in inputs if i.get("indexed")]
        self.data_names = [i["name"] for i in inputs if not i.get("indexed")]
        self.data_types = [collapse_if_tuple(i) for i in inputs if not i.get("indexed")]
        self.order = [i["name"] for i in inputs]
        types = [t for _, t in self.indexed] + self.data_types
        # Plain types only: an address inside a tuple or an array needs web3's recursive normalizer.
        self.fast = not abi.get("anonymous") and all(t == "address" or ("address" not in t and "(" not in t)
                                                      for t in types)  # fmt: skip
        self.dynamic_indexed = [t in ("string", "bytes") or t.endswith("]") for _, t in self.indexed]
        # Every value one 32-byte word (all the Helium events): sliced, not run through eth_abi.
        self.words = [word_decoder(t) for t in types]
        if not self.fast or not all(self.words) or any(self.dynamic_indexed):
            self.words = None

    def decode_words(self, topics: list, data: bytes) -> dict[str, Any]:
        n = len(self.indexed)
        if len(topics) != n + 1 or len(data) != 32 * len(self.data_names):
            raise ValueError("log does not fit the event")
        words = [bytes(t) for t in topics[1:]] + [data[i : i + 32] for i in range(0, len(data), 32)]
        values = [dec(w) for dec, w in zip(self.words, words, strict=True)]  # type: ignore[arg-type]
        names = [name for name, _ in self.indexed] + self.data_names
        args = dict(zip(names, values, strict=True))
        for name, typ in (*self.indexed, *zip(self.data_names, self.data_types, strict=True)):
            if typ == "address":
                args[name] = _checksum(args[name])
        return {k: args[k] for k in self.order}

    def decode(self, topics: list, data: bytes) -> dict[str, Any]:
        if self.words is not None:
            try:
                return self.decode_words(topics, bytes(data))
            except ValueError:  # dirty padding, a wrong length: eth_abi's path decides
                pass
        args: dict[str, Any] = {}
        for (name, typ), dyn, topic in zip(self.indexed, self.dynamic_indexed, topics[1:], strict=True):
            args[name] = bytes(topic) if dyn else abi_decode([typ], bytes(topic))[0]
        args.update(zip(self.data_names, abi_decode(self.data_types, bytes(data)), strict=True))
        for name, typ in (*self.indexed, *zip(self.data_names, self.data_types, strict=True)):
            if typ == "address":
                args[name] = _checksum(args[name])
        return {k: args[k] for k in self.order}


_DECODERS: dict[int, _EventDecoder] = {}
_CHECKSUMS: dict[str, str] = {}


def _checksum(address: str) -> str:
    out = _CHECKSUMS.get(address)
    if out is None:
        if len(_CHECKSUMS) > 10_000:
            _CHECKSUMS.clear()
        out = _CHECKSUMS[address] = to_checksum_address(address)
    return out


def decode_event(codec: Any, abi: dict, log_entry: Any) -> tuple[str, dict[str, Any]]:
    """(event name, args) of a log of the event `abi`, as web3's ``get_event_data`` gives them."""
    decoder = _DECODERS.get(id(abi))
    if decoder is None:
        decoder = _DECODERS[id(abi)] = _EventDecoder(abi)
    if decoder.fast:
        try:
            return decoder.name, decoder.decode(log_entry["topics"], log_entry["data"])
        except Exception:  # malformed for this ABI: let web3 raise its own error
            pass
    from web3._utils.events import get_event_data

    data = get_event_data(codec, abi, log_entry)
    return data["event"], dict(data["args"])


def _int(value: Any) -> int | None:
    return None if value is None else int(value, 16) if isinstance(value, str) else int(value)


def _hb(value: str, memo: dict[str, HexBytes]) -> HexBytes:
    """HexBytes of a node's 0x-hex string; `memo` keeps those of one receipt (its logs repeat the block and
    transaction hashes and most topics), and bytes.fromhex is faster than HexBytes' own parsing of a str."""
    out = memo.get(value)
    if out is None:
        try:
            out = HexBytes(bytes.fromhex(value[2:])) if isinstance(value, str) and value[:2] == "0x" else HexBytes(value)
        except ValueError:
            out = HexBytes(value)
        memo[value] = out
    return out


def receipt_from_json(raw: dict) -> dict[str, Any]:
    """A JSON-RPC receipt with web3's types for the fields the client reads."""
    memo: dict[str, HexBytes] = {}
    logs = [
        {
            "address": _checksum(lg["address"]), "topics": [_hb(t, memo) for t in lg["topics"]],
            "data": _hb(lg["data"], memo), "blockNumber": _int(lg.get("blockNumber")),
            "transactionHash": _hb(lg["transactionHash"], memo), "logIndex": _int(lg.get("logIndex")),
            "blockHash": _hb(lg["blockHash"], memo) if lg.get("blockHash") else None,
        }  # fmt: skip
        for lg in raw.get("logs") or []
    ]
    contract = raw.get("contractAddress")
    return {
        "transactionHash": _hb(raw["transactionHash"], memo), "blockHash": _hb(raw["blockHash"], memo),
        "blockNumber": _int(raw["blockNumber"]), "status": _int(raw.get("status")), "gasUsed": _int(raw["gasUsed"]),
        "contractAddress": _checksum(contract) if contract else None, "logs": logs,
    }  # fmt: skip


class Rpc:
    """Deadlines and bounded retries around every JSON-RPC request."""

    def __init__(self, settings: ClientSettings) -> None:
        self._settings = settings

    async def call(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        timeout = self._settings.rpc_timeout.total_seconds()
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._settings.rpc_attempts),
                wait=wait_exponential_jitter(initial=0.1, max=2.0),
                retry=retry_if_exception_type(TRANSIENT),
                reraise=True,
            ):
                with attempt:
                    return await asyncio.wait_for(fn(), timeout)
        except (ContractCustomError, ContractLogicError) as exc:
            raise revert_from(exc) from exc
        except TransactionNotFound:
            raise
        except Web3RPCError as exc:
            raise RpcRefused(f"{what}: {exc}") from exc
        except TRANSIENT as exc:
            raise ChainUnavailable(f"{what}: rpc failed after {self._settings.rpc_attempts} attempts: {exc!r}") from exc
        raise AssertionError("unreachable")


class TxSender:
    """Signs and sends the transactions of one key; safe under concurrency (one lock, a local nonce)."""

    def __init__(self, w3: AsyncWeb3, account: LocalAccount, chain_id: int, rpc: Rpc, settings: ClientSettings):
        self.w3 = w3
        self.account = account
        self.address = account.address
        self._chain_id = chain_id
        self._rpc = rpc
        self._settings = settings
        self._lock = asyncio.Lock()
        self._nonce: int | None = None

    async def _fees(self) -> tuple[int, int]:
        block = await self._rpc.call(lambda: self.w3.eth.get_block("latest"), "get_block")
        base = int(block.get("baseFeePerGas") or 0)
        tip = self._settings.priority_fee_wei
        return min(self._settings.max_fee_per_gas_wei, 2 * base + tip), min(tip, self._settings.max_fee_per_gas_wei)

    async def preflight(self, to: str | None, data: bytes, value: int = 0) -> None:
        """eth_call the transaction: raises ContractRevert (decoded) instead of spending gas on a revert."""
        tx: dict[str, Any] = {"from": self.address, "data": data, "value": value}
        if to is not None:
            tx["to"] = to
        await self._rpc.call(lambda: self.w3.eth.call(tx), "preflight")

    async def send(self, to: str | None, data: bytes, *, gas: int, value: int = 0) -> bytes:
        """Signs and sends; returns the transaction hash. Resyncs the nonce once if the node refuses it."""
        gas = min(gas, self._settings.max_gas)
        async with self._lock:
            for resync in (False, True):
                if self._nonce is None or resync:
                    self._nonce = await self._rpc.call(
                        lambda: self.w3.eth.get_transaction_count(self.address, "pending"), "nonce"
                    )
                max_fee, tip = await self._fees()
                tx: dict[str, Any] = {
                    "type": 2, "chainId": self._chain_id, "nonce": self._nonce, "gas": gas, "value": value,
                    "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "data": data,
                }  # fmt: skip
                if to is not None:
                    tx["to"] = to
                raw = bytes(self.account.sign_transaction(tx).raw_transaction)
                tx_hash = keccak(raw)
                try:
                    await self._rpc.call(lambda raw=raw: self.w3.eth.send_raw_transaction(raw), "send")
                except RpcRefused as exc:
                    msg = str(exc).lower()
                    if any(w in msg for w in _KNOWN_WORDS) or await self._landed(tx_hash):
                        self._nonce += 1
                        return tx_hash
                    if not resync and any(w in msg for w in _NONCE_WORDS):
                        log.warning("chain_nonce_resync", sender=self.address, nonce=self._nonce, error=str(exc))
                        continue
                    self._nonce = None
                    raise
                except ChainUnavailable:
                    self._nonce = None  # unknown whether it landed: ask the chain next time
                    raise
                self._nonce += 1
                log.debug("chain_tx_sent", sender=self.address, tx=tx_hash.hex(), nonce=tx["nonce"], gas=gas)
                return tx_hash
        raise AssertionError("unreachable")

    async def _landed(self, tx_hash: bytes) -> bool:
        try:
            await self.w3.eth.get_transaction(tx_hash)
            return True
        except (TransactionNotFound, Web3RPCError, ValueError):
            return False

    async def wait(self, tx_hash: bytes, timeout: float) -> dict:  # noqa: ASYNC109 (a deadline, polled)
        """The receipt of `tx_hash`, polled until `timeout` seconds have passed (then ChainTimeout)."""
        deadline = time.monotonic() + timeout
        poll = self._settings.poll_interval.total_seconds()
        while True:
            try:
                return await self._rpc.call(lambda: self._receipt(tx_hash), "receipt")
            except TransactionNotFound:
                pass
            if time.monotonic() >= deadline:
                raise ChainTimeout(f"no receipt for 0x{tx_hash.hex()} within {timeout:.1f}s")
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    async def _receipt(self, tx_hash: bytes) -> dict:
        provider = self.w3.provider
        if not isinstance(provider, AsyncHTTPProvider):  # in-process providers answer in eth-tester's types
            return await self.w3.eth.get_transaction_receipt(tx_hash)
        response = await provider.make_request("eth_getTransactionReceipt", ["0x" + bytes(tx_hash).hex()])
        if response.get("error"):
            raise Web3RPCError(str(response["error"]), rpc_response=response)
        if response.get("result") is None:
            raise TransactionNotFound(f"transaction 0x{bytes(tx_hash).hex()} has no receipt yet")
        return receipt_from_json(response["result"])
