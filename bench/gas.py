"""Gas per settled GPT task on the embedded EVM, all transactions counted, at batch sizes 1, 10 and 100.

A task needs no transaction when it is created and none per result: the only per-task transaction is its
share of one settle(tasks, slashes) batch (creator signature, 3 result signatures, shares, events). Deposits
and credit withdrawals are per account, not per task; their cost is printed apart. Steady state: the nodes
already hold credits (a warm-up batch runs first), and the creator's nonces run in sequence.

SD tasks are settled by pHash: each paid result carries its images' pHashes, hashed and compared pairwise
on chain; their cost per task (2 images, results 1 to 3 bits apart) is printed apart.

Anchor: the predecessor network spends about 2,670,000 gas per GPT task over 8 transactions (create,
3 commitments, 3 disclosures, result upload); the target is at most 1/10 of that at batch 100.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time

import structlog
from eth_account import Account

from chain.deploy import ETHER
from chain.devchain import DevChain
from chain.models import SignedResult, TaskSettlement
from chain.signing import compute_task_id, sd_result_hash, sign_result, sign_task

ANCHOR = 2_670_000
FEE = 25 * 10**15


def _tasks(dc: DevChain, creator, nodes, first_nonce: int, n: int, deadline: int) -> list[TaskSettlement]:
    out = []
    for nonce in range(first_nonce, first_nonce + n):
        args_hash = os.urandom(32)
        task_id = compute_task_id(creator.address, nonce, args_hash)
        sig = sign_task(creator, dc.domain, task_id, args_hash, FEE, nonce, deadline)
        result_hash = os.urandom(32)
        results = tuple(
            SignedResult(node.address, result_hash, sign_result(node, dc.domain, task_id, result_hash), order)
            for order, node in enumerate(nodes, start=1)
        )
        out.append(TaskSettlement(task_id, args_hash, creator.address, FEE, nonce, deadline, sig, results))
    return out


def _sd_tasks(dc: DevChain, creator, nodes, first_nonce: int, n: int, deadline: int) -> list[TaskSettlement]:
    """SD tasks of 2 images whose three results differ by 0, 1 and 2 bits in image 0."""
    out = []
    for nonce in range(first_nonce, first_nonce + n):
        args_hash = os.urandom(32)
        task_id = compute_task_id(creator.address, nonce, args_hash)
        sig = sign_task(creator, dc.domain, task_id, args_hash, FEE, nonce, deadline)
        base = [int.from_bytes(os.urandom(8), "big") for _ in range(2)]
        results = []
        for order, (node, flip) in enumerate(zip(nodes, (0, 0b1, 0b110), strict=True), start=1):
            phashes = [base[0] ^ flip, base[1]]
            signature = sign_result(node, dc.domain, task_id, sd_result_hash(phashes))
            results.append(SignedResult.sd(node.address, phashes, signature, order))
        out.append(TaskSettlement(task_id, args_hash, creator.address, FEE, nonce, deadline, sig, tuple(results)))
    return out


async def _settle_gas(client, tasks: list[TaskSettlement]) -> tuple[int, float]:
    start = time.perf_counter()
    receipt = await client.wait_receipt(await client.settle(tasks), timeout=120)
    return receipt.gas_used, time.perf_counter() - start


async def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="helium-gas-") as tmp:
        dc = await DevChain.open(tmp)
        try:
            client = dc.client()
            nodes = [Account.create() for _ in range(3)]
            for node in nodes:
                await dc.fund_and_stake(node)
            creator = dc.keys.creator
            deadline = await client.block_timestamp() + 3600
            await _settle_gas(client, _tasks(dc, creator, nodes, 0, 1, deadline))  # warm-up: nodes hold credits
            nonce = 1
            per_task = {}
            for n in (1, 10, 100):
                gas, seconds = await _settle_gas(client, _tasks(dc, creator, nodes, nonce, n, deadline))
                nonce += n
                per_task[n] = gas / n
                print(f"batch={n:<4} settle_tx_gas={gas:<9} gas_per_task={gas / n:<10.0f} "
                      f"ratio_vs_anchor={gas / n / ANCHOR:.4f} wall_s={seconds:.2f}")  # fmt: skip
            gas, _ = await _settle_gas(client, _sd_tasks(dc, creator, nodes, nonce, 100, deadline))
            nonce += 100
            print(f"batch=100  sd_2_images gas_per_task={gas / 100:.0f} (pHashes hashed and matched pairwise on chain)")
            # worst case: every task of the batch from a different creator (cold deposit and nonce slots)
            creators = [Account.create() for _ in range(100)]
            deposit_gas = 0
            for c in creators:
                await dc.fund(c.address, 2 * ETHER)
                deposit_gas += (await dc.client(c).deposit(c, ETHER)).gas_used
            mixed = [t for c in creators for t in _tasks(dc, c, nodes, 0, 1, deadline)]
            gas, _ = await _settle_gas(client, mixed)
            print(f"batch=100  distinct_creators=100 gas_per_task={gas / 100:.0f} "
                  f"(apart: one deposit tx per creator = {deposit_gas / 100:.0f} gas)")  # fmt: skip
            withdraw = (await dc.client(nodes[0]).withdraw_credit(nodes[0])).gas_used
            print(f"apart: one credit withdrawal per node (pull payment) = {withdraw} gas")
        finally:
            await dc.close()
    value = per_task[100]
    print(f"anchor: predecessor {ANCHOR} gas per GPT task over 8 transactions; target <= {ANCHOR // 10} at batch 100")
    print(f"figure=gas_per_task_batch100 value={value:.0f} unit=gas baseline=predecessor_2670000 "
          f"ratio={value / ANCHOR:.4f}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
