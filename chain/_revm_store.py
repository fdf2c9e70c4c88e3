"""The revm chain's durable record: one SQLite file (``chain.sqlite``) with the current world state and the
blocks, transactions, receipts and logs as a JSON-RPC node serves them.

A block is committed whole (``commit_block``: one SQLite transaction, WAL, ``synchronous=FULL``, so the commit
is fsynced before the node answers): the block, its transaction and receipt, its logs, and the state it left
(each changed account and storage slot, and new code). A ``kill -9`` at any point leaves the file at the end
of the last committed block; ``load_state`` reads that state back into a fresh EVM, so a reopen costs one pass
over the state (accounts and slots), not a replay of the history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AccountState", "BlockRecord", "RevmStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (addr BLOB PRIMARY KEY, balance TEXT NOT NULL, nonce INTEGER NOT NULL,
                                     code_hash BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS code (hash BLOB PRIMARY KEY, code BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS storage (addr BLOB NOT NULL, slot BLOB NOT NULL, value BLOB NOT NULL,
                                    PRIMARY KEY (addr, slot)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS txs (hash BLOB PRIMARY KEY, block INTEGER NOT NULL, tx TEXT NOT NULL,
                                receipt TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (block INTEGER NOT NULL, idx INTEGER NOT NULL, address TEXT NOT NULL,
                                 topic0 TEXT, topic1 TEXT, topic2 TEXT, topic3 TEXT,
                                 PRIMARY KEY (block, idx)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logs_topic1 ON logs (topic1);
CREATE INDEX IF NOT EXISTS txs_block ON txs (block);
"""


@dataclass
class AccountState:
    balance: int = 0
    nonce: int = 0
    code_hash: bytes = b""  # empty: no code


@dataclass
class BlockRecord:
    """One mined block: its JSON-RPC form and what it changed."""

    number: int
    hash: bytes
    block: dict[str, Any]
    txs: list[tuple[bytes, dict, dict]] = field(default_factory=list)  # (hash, tx json, receipt json)
    accounts: dict[bytes, AccountState] = field(default_factory=dict)
    storage: dict[tuple[bytes, int], int] = field(default_factory=dict)
    code: dict[bytes, bytes] = field(default_factory=dict)


class RevmStore:
    """The SQLite file of one revm chain (one process at a time: the caller holds the directory lock)."""

    def __init__(self, path: str | Path) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    # --- reads ------------------------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (key, value))

    def head(self) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT json FROM blocks ORDER BY number DESC LIMIT 1").fetchone()
        return None if row is None else json.loads(row[0])

    def block(self, number: int) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT json FROM blocks WHERE number = ?", (number,)).fetchone()
        return None if row is None else json.loads(row[0])

    def block_by_hash(self, block_hash: bytes) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT json FROM blocks WHERE hash = ?", (block_hash,)).fetchone()
        return None if row is None else json.loads(row[0])

    def tx(self, tx_hash: bytes) -> tuple[dict, dict] | None:
        row = self._conn.execute("SELECT tx, receipt FROM txs WHERE hash = ?", (tx_hash,)).fetchone()
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    def accounts(self) -> Iterator[tuple[bytes, AccountState]]:
        for addr, balance, nonce, code_hash in self._conn.execute("SELECT addr, balance, nonce, code_hash FROM accounts"):
            yield bytes(addr), AccountState(int(balance), nonce, bytes(code_hash))

    def code(self, code_hash: bytes) -> bytes:
        row = self._conn.execute("SELECT code FROM code WHERE hash = ?", (code_hash,)).fetchone()
        return b"" if row is None else bytes(row[0])

    def storage(self) -> Iterator[tuple[bytes, int, int]]:
        for addr, slot, value in self._conn.execute("SELECT addr, slot, value FROM storage"):
            yield bytes(addr), int.from_bytes(slot, "big"), int.from_bytes(value, "big")

    def slot(self, addr: bytes, slot: int) -> int:
        row = self._conn.execute("SELECT value FROM storage WHERE addr = ? AND slot = ?",
                                 (addr, slot.to_bytes(32, "big"))).fetchone()  # fmt: skip
        return 0 if row is None else int.from_bytes(row[0], "big")

    def logs(self, from_block: int, to_block: int, addresses: list[str] | None,
             topics: list[list[str] | None]) -> list[dict]:  # fmt: skip
        """Logs in [from_block, to_block] of any of `addresses` (lower-case hex; None: all) whose topic i is
        one of topics[i] (None: any), in chain order."""
        # The filter runs on the indexed columns; each log itself is read from its block's receipt (one
        # transaction per block: a log's index in the block is its index in the receipt).
        sql = ["SELECT block, idx FROM logs WHERE block BETWEEN ? AND ?"]
        args: list[Any] = [from_block, to_block]
        if addresses is not None:
            sql.append(f"AND address IN ({','.join('?' * len(addresses))})")
            args += addresses
        for i, wanted in enumerate(topics[:4]):
            if wanted is not None:
                sql.append(f"AND topic{i} IN ({','.join('?' * len(wanted))})")
                args += wanted
        sql.append("ORDER BY block, idx")
        receipts: dict[int, list[dict]] = {}
        out = []
        for block, idx in self._conn.execute(" ".join(sql), args).fetchall():
            logs = receipts.get(block)
            if logs is None:
                row = self._conn.execute("SELECT receipt FROM txs WHERE block = ?", (block,)).fetchone()
                logs = receipts[block] = json.loads(row[0])["logs"]
            out.append(logs[idx])
        return out

    # --- the one write ----------------------------------------------------------------------------------

    def commit_block(self, rec: BlockRecord, meta: Iterable[tuple[str, str]] = ()) -> None:
        """Writes the block and everything it changed in one fsynced transaction."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT INTO blocks (number, hash, json) VALUES (?, ?, ?)",
                      (rec.number, rec.hash, json.dumps(rec.block)))  # fmt: skip
            for tx_hash, tx, receipt in rec.txs:
                c.execute("INSERT INTO txs (hash, block, tx, receipt) VALUES (?, ?, ?, ?)",
                          (tx_hash, rec.number, json.dumps(tx), json.dumps(receipt)))  # fmt: skip
                c.executemany(
                    "INSERT INTO logs (block, idx, address, topic0, topic1, topic2, topic3) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(rec.number, i, lg["address"].lower(), *(lg["topics"] + [None] * 4)[:4])
                     for i, lg in enumerate(receipt["logs"])],
                )  # fmt: skip
            c.executemany("INSERT OR IGNORE INTO code (hash, code) VALUES (?, ?)", rec.code.items())
            c.executemany(
                "INSERT OR REPLACE INTO accounts (addr, balance, nonce, code_hash) VALUES (?, ?, ?, ?)",
                [(a, str(s.balance), s.nonce, s.code_hash) for a, s in rec.accounts.items()],
            )
            slots = [(a, k.to_bytes(32, "big"), v) for (a, k), v in rec.storage.items()]
            c.executemany("DELETE FROM storage WHERE addr = ? AND slot = ?", [(a, k) for a, k, v in slots if v == 0])
            c.executemany("INSERT OR REPLACE INTO storage (addr, slot, value) VALUES (?, ?, ?)",
                          [(a, k, v.to_bytes(32, "big")) for a, k, v in slots if v != 0])  # fmt: skip
            c.executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", list(meta))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._conn.close()
