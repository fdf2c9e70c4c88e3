"""The embedded chain on revm (the Rust EVM, through pyrevm): transactions, blocks and state, one block per
transaction, persisted block by block in ``chain.sqlite`` (``chain._revm_store``).

pyrevm runs each call on one journaled state that it never finalizes, so state would stay "warm" from one
transaction to the next (EIP-2929 access costs, EIP-2200 original values): wrong gas. ``RevmChain`` keeps the
EVM's state cold between transactions: every transaction runs inside a journal checkpoint; afterwards the
changes are read from the journal (``journal_str``, revm's ``Debug`` of it), the checkpoint is reverted, and
the changed accounts and slots are written back to revm's database as cold state. Each transaction thus sees
exactly what a fresh transaction on a real node sees, and its gas is the gas Hardhat and py-evm charge
(the parity tests run the same calls on both backends).

What pyrevm's message call leaves out is done here, as the yellow paper says: transaction validation (chain id,
nonce, fee caps, balance, EIP-7623 calldata floor), the nonce increment, the fee (``gas_used *
effective_gas_price``, the base fee burnt, the tip to the coinbase), the Prague calldata floor on gas used,
and the EIP-1559 base fee of each block. revm's Cancun rules run the code (the contracts are built for
Cancun; Prague changes no opcode or gas cost that they use).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth.vm.forks.prague.transactions import PragueTransactionBuilder
from eth_utils import keccak, to_checksum_address
from pyrevm import EVM, AccountInfo, BlockEnv, CfgEnv, Env

from chain._revm_store import AccountState, BlockRecord, RevmStore
from chain._tx import _checksum

__all__ = ["GAS_LIMIT", "Reverted", "RevmChain", "TxRejected"]

GAS_LIMIT = 60_000_000
GENESIS_BASE_FEE = 1_000_000_000
COINBASE = b"\x00" * 20
_COINBASE_HEX = "0x" + "00" * 20
_KECCAK_EMPTY = keccak(b"")
_ZERO32 = "0x" + "00" * 32
_SPEC = "CANCUN"
_ACCOUNT = re.compile(
    r"(0x[0-9a-fA-F]{40}): Account \{ info: AccountInfo \{ balance: (\d+), nonce: (\d+), code_hash: (0x[0-9a-f]{64}),"
    r" code: .*?\}, storage: \{(.*?)\}, status: AccountStatus\(([^)]*)\) \}", re.S)  # fmt: skip
_SLOT = re.compile(r"(\d+): StorageSlot \{ previous_or_original_value: (\d+), present_value: (\d+)")
_REVERT_OUT = re.compile(r"output: 0x([0-9a-fA-F]*)")


class TxRejected(Exception):
    """The node refuses the transaction (JSON-RPC -32000): bad nonce, fees, balance, gas, chain id."""


class Reverted(Exception):
    """A call reverted or halted (JSON-RPC code 3, with the revert data)."""

    def __init__(self, data: bytes, gas_used: int) -> None:
        super().__init__("execution reverted")
        self.data = data
        self.gas_used = gas_used


@dataclass
class Outcome:
    ok: bool
    gas_used: int  # before the calldata floor
    output: bytes
    logs: list[tuple[str, list[bytes], bytes]]
    created: str | None
    accounts: dict[bytes, AccountState]
    storage: dict[tuple[bytes, int], int]
    code: dict[bytes, bytes]


def _hex(value: int) -> str:
    return hex(value)


_BLOOM_BITS: dict[bytes, int] = {}


def _bloom_bits(item: bytes) -> int:
    """The three logs-bloom bits of an address or topic (yellow paper M3:2048), remembered: a block's
    logs repeat a few addresses and event topics."""
    bits = _BLOOM_BITS.get(item)
    if bits is None:
        h = keccak(item)
        bits = 0
        for i in (0, 2, 4):
            bits |= 1 << (((h[i] << 8) | h[i + 1]) & 2047)
        if len(_BLOOM_BITS) > 50_000:
            _BLOOM_BITS.clear()
        _BLOOM_BITS[item] = bits
    return bits


def calldata_floor(data: bytes) -> int:
    """EIP-7623 (Prague): the least gas a transaction with this calldata uses."""
    zeros = data.count(0)
    return 21_000 + 10 * (zeros + 4 * (len(data) - zeros))


def next_base_fee(parent_base: int, parent_used: int, gas_limit: int = GAS_LIMIT) -> int:
    target = gas_limit // 2
    if parent_used == target:
        return parent_base
    if parent_used > target:
        return parent_base + max(parent_base * (parent_used - target) // target // 8, 1)
    return parent_base - parent_base * (target - parent_used) // target // 8


class RevmChain:
    """The chain: state in a pyrevm EVM (cold between transactions), history in a ``RevmStore``."""

    def __init__(self, store: RevmStore, chain_id: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.chain_id = chain_id
        self._clock = clock
        self.evm = EVM(env=Env(cfg=CfgEnv(chain_id=chain_id)), gas_limit=GAS_LIMIT, spec_id=_SPEC)
        self.accounts: dict[bytes, AccountState] = {}
        self.head: dict[str, Any] = {}
        travel = store.meta("time_travel")
        self._travel = int(travel) if travel else 0  # the next block's timestamp is at least this

    @classmethod
    def open(cls, store: RevmStore, chain_id: int, funded: dict[bytes, int]) -> tuple[RevmChain, bool]:
        """The chain in `store` (its head and state), or a new one whose genesis funds `funded`."""
        chain = cls(store, chain_id)
        head = store.head()
        if head is None:
            chain._genesis(funded)
            return chain, True
        chain._load()
        return chain, False

    def _load(self) -> None:
        """The head and the state as committed in the store, into a fresh EVM."""
        self.evm = EVM(env=Env(cfg=CfgEnv(chain_id=self.chain_id)), gas_limit=GAS_LIMIT, spec_id=_SPEC)
        self.accounts = {}
        self.head = self.store.head() or {}
        for addr, st in self.store.accounts():
            self.accounts[addr] = st
            self._put_account(addr, st, self.store.code(st.code_hash) if st.code_hash else None)
        for addr, slot, value in self.store.storage():
            self._put_slot(addr, slot, value)

    # --- state -----------------------------------------------------------------------------------------

    def _put_account(self, addr: bytes, st: AccountState, code: bytes | None = None) -> None:
        info = AccountInfo(balance=st.balance, nonce=st.nonce, code_hash=st.code_hash or _KECCAK_EMPTY, code=code)
        self.evm.insert_account_info("0x" + addr.hex(), info)

    def _put_slot(self, addr: bytes, slot: int, value: int) -> None:
        # Into revm's database, cold: the account load that the insert does is undone by the revert.
        cp = self.evm.snapshot()
        self.evm.insert_account_storage("0x" + addr.hex(), slot, value)
        self.evm.revert(cp)

    def balance(self, addr: bytes) -> int:
        st = self.accounts.get(addr)
        return st.balance if st else 0

    def nonce(self, addr: bytes) -> int:
        st = self.accounts.get(addr)
        return st.nonce if st else 0

    def code(self, addr: bytes) -> bytes:
        st = self.accounts.get(addr)
        return self.store.code(st.code_hash) if st and st.code_hash else b""

    def storage_at(self, addr: bytes, slot: int) -> int:
        return self.store.slot(addr, slot)

    # --- blocks ----------------------------------------------------------------------------------------

    @property
    def number(self) -> int:
        return int(self.head["number"], 16)

    def pending_env(self) -> tuple[int, int, int]:
        """(number, timestamp, base fee) of the block that the next transaction opens."""
        ts = max(int(self.head["timestamp"], 16) + 1, int(self._clock()), self._travel)
        base = next_base_fee(int(self.head["baseFeePerGas"], 16), int(self.head["gasUsed"], 16))
        return self.number + 1, ts, base

    def increase_time(self, seconds: int) -> None:
        """Hardhat's evm_increaseTime: the next block is at least `seconds` after the latest one."""
        _, ts, _ = self.pending_env()
        self._travel = max(int(self.head["timestamp"], 16) + seconds, ts)
        self.store.set_meta("time_travel", str(self._travel))

    def _set_block_env(self, number: int, ts: int, base: int) -> None:
        self.evm.set_block_env(BlockEnv(number=number, coinbase=_COINBASE_HEX, timestamp=ts, difficulty=0,
                                        prevrandao=keccak(number.to_bytes(8, "big")), basefee=base,
                                        gas_limit=GAS_LIMIT, excess_blob_gas=0))  # fmt: skip

    def _genesis(self, funded: dict[bytes, int]) -> None:
        rec = self._block_record(0, int(self._clock()), GENESIS_BASE_FEE, [], 0, b"\x00" * 32)
        for addr, bal in funded.items():
            st = rec.accounts[addr] = AccountState(balance=bal)
            self.accounts[addr] = st
            self._put_account(addr, st)
        self.store.commit_block(rec)
        self.head = rec.block

    def _block_record(self, number: int, ts: int, base: int, tx_hashes: list[bytes], gas_used: int,
                      parent: bytes, bloom: int = 0) -> BlockRecord:  # fmt: skip
        block_hash = keccak(parent + number.to_bytes(8, "big") + ts.to_bytes(8, "big") + b"".join(tx_hashes))
        block = {
            "number": _hex(number), "hash": "0x" + block_hash.hex(), "parentHash": "0x" + parent.hex(),
            "timestamp": _hex(ts), "gasLimit": _hex(GAS_LIMIT), "gasUsed": _hex(gas_used), "baseFeePerGas": _hex(base),
            "miner": _COINBASE_HEX, "difficulty": "0x0", "totalDifficulty": "0x0", "extraData": "0x",
            "nonce": "0x0000000000000000", "mixHash": _ZERO32, "sha3Uncles": "0x" + keccak(b"\xc0").hex(),
            "stateRoot": _ZERO32, "transactionsRoot": _ZERO32, "receiptsRoot": _ZERO32,
            "logsBloom": "0x" + bloom.to_bytes(256, "big").hex(), "size": "0x0", "uncles": [],
            "transactions": ["0x" + h.hex() for h in tx_hashes], "withdrawals": [], "withdrawalsRoot": _ZERO32,
            "blobGasUsed": "0x0", "excessBlobGas": "0x0", "parentBeaconBlockRoot": _ZERO32,
        }  # fmt: skip
        return BlockRecord(number, block_hash, block)

    def mine(self) -> None:
        """An empty block (evm_mine)."""
        number, ts, base = self.pending_env()
        rec = self._block_record(number, ts, base, [], 0, bytes.fromhex(self.head["hash"][2:]))
        self._travel = 0
        self.store.commit_block(rec, [("time_travel", "0")])
        self.head = rec.block

    # --- execution -------------------------------------------------------------------------------------

    def _execute(self, sender: bytes, to: bytes | None, data: bytes, value: int, gas: int, price: int,
                 *, commit: bool) -> Outcome:  # fmt: skip
        """Runs one transaction inside a checkpoint; with `commit`, returns what it changed (revm's state is
        left as before: ``_apply`` writes the changes back cold)."""
        evm = self.evm
        cp = evm.snapshot()
        try:
            created = None
            try:
                if to is None:
                    created = evm.deploy("0x" + sender.hex(), data, value, gas, 0)
                    output = b""
                else:
                    output = bytes(evm.message_call("0x" + sender.hex(), "0x" + to.hex(), data, value, gas, price))
                ok = True
            except RuntimeError as exc:
                msg = str(exc)
                if not msg.startswith(("Revert {", "Halt {")):
                    raise TxRejected(msg) from None
                found = _REVERT_OUT.search(msg)
                output, ok = (bytes.fromhex(found.group(1)) if found else b""), False
            res = evm.result
            out = Outcome(ok, res.gas_used, output, [], created, {}, {}, {})
            if ok:
                out.logs = [(lg.address, *lg.data) for lg in res.logs]
                if commit:
                    self._diff(evm.journal_str, out)
            return out
        finally:
            evm.revert(cp)

    def _diff(self, journal: str, out: Outcome) -> None:
        accounts = slots = 0
        for m in _ACCOUNT.finditer(journal):
            accounts += 1
            addr = bytes.fromhex(m.group(1)[2:])
            code_hash = bytes.fromhex(m.group(4)[2:])
            st = AccountState(int(m.group(2)), int(m.group(3)), b"" if code_hash == _KECCAK_EMPTY else code_hash)
            old = self.accounts.get(addr)
            if old is None and st == AccountState():
                continue  # touched but empty: EIP-161 leaves no account
            if st != old:
                out.accounts[addr] = st
                if st.code_hash and (old is None or old.code_hash != st.code_hash):
                    out.code[st.code_hash] = bytes(self.evm.get_code(m.group(1)) or b"")
            for slot in _SLOT.finditer(m.group(5)):
                slots += 1
                if slot.group(2) != slot.group(3):
                    out.storage[(addr, int(slot.group(1)))] = int(slot.group(3))
        if accounts != journal.count(": Account { info: ") or slots != journal.count("StorageSlot {"):
            # pyrevm's Debug text is not what this reading expects: refuse rather than lose a change.
            raise RuntimeError(f"revm journal not understood ({accounts} accounts, {slots} slots read)")

    def _apply(self, out: Outcome) -> None:
        for addr, st in out.accounts.items():
            self.accounts[addr] = st
            self._put_account(addr, st, out.code.get(st.code_hash))
        for (addr, slot), value in out.storage.items():
            self._put_slot(addr, slot, value)

    def call(self, sender: bytes, to: bytes | None, data: bytes, value: int = 0, gas: int | None = None) -> Outcome:
        """eth_call / eth_estimateGas on the pending block; raises Reverted."""
        number, ts, base = self.pending_env()
        self._set_block_env(number, ts, base)
        out = self._execute(sender, to, data, value, min(gas or GAS_LIMIT, GAS_LIMIT), 0, commit=False)
        if not out.ok:
            raise Reverted(out.output, out.gas_used)
        return out

    def send_raw(self, raw: bytes) -> bytes:
        """Validates, runs and mines one signed transaction in its own block; returns its hash."""
        try:
            tx = PragueTransactionBuilder.decode(raw)
            sender = tx.sender
        except Exception as exc:
            raise TxRejected(f"invalid transaction: {exc}") from None
        tx_hash = keccak(raw)
        if self.store.tx(tx_hash) is not None:
            raise TxRejected("already known")
        number, ts, base = self.pending_env()
        price = self._validate(tx, sender, base)
        self._set_block_env(number, ts, base)
        to = tx.to or None
        out = self._execute(sender, to, tx.data, tx.value, tx.gas, price, commit=True)
        gas_used = max(out.gas_used, calldata_floor(tx.data))
        fee, tip = gas_used * price, gas_used * (price - base)
        acct = out.accounts.get(sender) or self.accounts.get(sender) or AccountState()
        if not out.ok:
            out.accounts, out.storage, out.code = {}, {}, {}
            acct = self.accounts.get(sender) or AccountState()
        out.accounts[sender] = AccountState(acct.balance - fee, self.nonce(sender) + 1, acct.code_hash)
        if tip:
            cb = out.accounts.get(COINBASE) or self.accounts.get(COINBASE) or AccountState()
            out.accounts[COINBASE] = AccountState(cb.balance + tip, cb.nonce, cb.code_hash)
        rec = self._mined(tx, tx_hash, sender, number, ts, base, price, gas_used, out)
        self._apply(out)
        try:
            self.store.commit_block(rec, [("time_travel", "0")])
        except BaseException:
            self._load()  # not on disk (disk full, I/O error): back to the state that is
            raise
        self._travel = 0
        self.head = rec.block
        return tx_hash

    def _validate(self, tx: Any, sender: bytes, base: int) -> int:
        """The effective gas price of `tx`, or TxRejected as a node refuses it."""
        chain_id = getattr(tx, "chain_id", None)
        if chain_id is not None and chain_id != self.chain_id:
            raise TxRejected(f"invalid chain id {chain_id}, expected {self.chain_id}")
        nonce = self.nonce(sender)
        if tx.nonce < nonce:
            raise TxRejected(f"nonce too low: expected nonce {nonce}, got {tx.nonce}")
        if tx.nonce > nonce:
            raise TxRejected(f"nonce too high: expected nonce {nonce}, got {tx.nonce}")
        if tx.gas > GAS_LIMIT:
            raise TxRejected(f"gas limit {tx.gas} exceeds the block gas limit {GAS_LIMIT}")
        if tx.gas < calldata_floor(tx.data):
            raise TxRejected(f"intrinsic gas too low: gas {tx.gas} < floor {calldata_floor(tx.data)}")
        if getattr(tx, "access_list", ()) or getattr(tx, "type_id", None) not in (None, 1, 2):
            raise TxRejected("only legacy and EIP-1559 transactions without access lists are accepted")
        max_fee, tip = tx.max_fee_per_gas, tx.max_priority_fee_per_gas
        if max_fee < base:
            raise TxRejected(f"max fee per gas {max_fee} less than block base fee {base}")
        if tip > max_fee:
            raise TxRejected(f"max priority fee per gas {tip} higher than max fee per gas {max_fee}")
        if self.balance(sender) < tx.gas * max_fee + tx.value:
            raise TxRejected(f"insufficient funds for gas * price + value: balance {self.balance(sender)}, "
                             f"tx cost {tx.gas * max_fee + tx.value}")  # fmt: skip
        return min(max_fee, base + tip)

    def _mined(self, tx: Any, tx_hash: bytes, sender: bytes, number: int, ts: int, base: int, price: int,
               gas_used: int, out: Outcome) -> BlockRecord:  # fmt: skip
        """The block record of one mined transaction: block, transaction and receipt as JSON-RPC gives them."""
        bloom = 0
        for address, topics, _ in out.logs:
            bloom |= _bloom_bits(bytes.fromhex(address[2:]))
            for t in topics:
                bloom |= _bloom_bits(bytes(t))
        rec = self._block_record(number, ts, base, [tx_hash], gas_used, bytes.fromhex(self.head["hash"][2:]), bloom)
        rec.accounts, rec.storage, rec.code = out.accounts, out.storage, out.code
        where = {"blockHash": rec.block["hash"], "blockNumber": rec.block["number"], "transactionIndex": "0x0"}
        h = "0x" + tx_hash.hex()
        logs = [{"address": _checksum(address), "topics": ["0x" + bytes(t).hex() for t in topics],
                 "data": "0x" + bytes(data).hex(), **where, "transactionHash": h, "logIndex": _hex(i),
                 "removed": False} for i, (address, topics, data) in enumerate(out.logs)]  # fmt: skip
        to = tx.to or None
        frm = to_checksum_address(sender)
        type_id = getattr(tx, "type_id", None) or 0
        txj = {
            "hash": h, **where, "from": frm, "to": to_checksum_address(to) if to else None, "nonce": _hex(tx.nonce),
            "gas": _hex(tx.gas), "gasPrice": _hex(price), "value": _hex(tx.value), "input": "0x" + tx.data.hex(),
            "type": _hex(type_id), "chainId": _hex(self.chain_id), "r": _hex(tx.r), "s": _hex(tx.s),
        }  # fmt: skip
        if type_id == 2:
            txj.update(maxFeePerGas=_hex(tx.max_fee_per_gas), maxPriorityFeePerGas=_hex(tx.max_priority_fee_per_gas),
                       accessList=[], v=_hex(tx.y_parity), yParity=_hex(tx.y_parity))  # fmt: skip
        else:
            txj["v"] = _hex(tx.v)
        receipt = {
            "transactionHash": h, **where, "from": frm, "to": txj["to"], "gasUsed": _hex(gas_used),
            "cumulativeGasUsed": _hex(gas_used), "effectiveGasPrice": _hex(price), "status": "0x1" if out.ok else "0x0",
            "contractAddress": to_checksum_address(out.created) if out.created else None, "logs": logs,
            "logsBloom": rec.block["logsBloom"], "type": _hex(type_id),
        }  # fmt: skip
        rec.txs.append((tx_hash, txj, receipt))
        return rec
