"""Chain fixtures: the embedded dev chain, a real Hardhat 2 node process, and one ``ChainEnv`` face over both."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from chain.client import ChainClient
from chain.deploy import ETHER, DeploySettings, deploy_contracts
from chain.devchain import DevChain
from chain.models import ClientSettings, ContractAddresses
from chain.signing import Domain

ROOT = Path(__file__).resolve().parents[3]
HARDHAT = ROOT / "node_modules" / ".bin" / "hardhat"
# Hardhat's well-known dev accounts (mnemonic "test test ... junk"), funded with 10,000 tokens each.
HARDHAT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
TEST_DEPLOY = DeploySettings(min_stake=400 * ETHER)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rpc(url: str, method: str, params: list | None = None) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=2) as resp:
        return json.loads(resp.read())["result"]


@pytest.fixture(scope="session")
def hardhat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Hardhat 2 JSON-RPC node process on a free port; stopped at the end of the session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("hardhat") / "node.log"
    env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true", CI="true")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hardhat node exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if _rpc(url, "eth_chainId") == "0x7a69":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hardhat node did not answer within 60s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        accounts = {a.lower() for a in _rpc(url, "eth_accounts")}
        assert all(Account.from_key(k).address.lower() in accounts for k in HARDHAT_KEYS)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class ChainEnv:
    """One chain with fresh Helium contracts, whichever backend: what the client tests need."""

    name: str
    w3: AsyncWeb3
    addresses: ContractAddresses
    chain_id: int
    admin: LocalAccount
    coordinator: LocalAccount
    faucet: LocalAccount

    @property
    def domain(self) -> Domain:
        return Domain(chain_id=self.chain_id, verifying_contract=self.addresses.ledger)

    def client(self, key: LocalAccount | None = None, **settings: object) -> ChainClient:
        s = ClientSettings(**settings)  # type: ignore[arg-type]
        return ChainClient(self.w3, key or self.coordinator, self.addresses, self.chain_id, s)

    async def funded(self, amount: int = 1_000 * ETHER) -> LocalAccount:
        account = Account.create()
        await self.client(self.faucet).send_value(account.address, amount)
        return account

    async def staked_nodes(self, n: int) -> list[LocalAccount]:
        nodes = [Account.create() for _ in range(n)]
        faucet = self.client(self.faucet)
        sent = [await faucet.sender_for(None).send(x.address, b"", gas=21_000, value=TEST_DEPLOY.min_stake + ETHER)
                for x in nodes]  # fmt: skip
        await asyncio.gather(*(faucet.wait_receipt(tx) for tx in sent))
        await asyncio.gather(*(self.client(x).stake(x, TEST_DEPLOY.min_stake) for x in nodes))
        return nodes


async def _embedded(tmp_path: Path) -> AsyncIterator[ChainEnv]:
    dc = await DevChain.open(tmp_path / "devchain", deploy_settings=TEST_DEPLOY)
    try:
        yield ChainEnv("embedded", dc.w3, dc.addresses, dc.chain_id, dc.keys.admin, dc.keys.coordinator, dc.keys.faucet)
    finally:
        await dc.close()


async def _hardhat(url: str) -> AsyncIterator[ChainEnv]:
    w3 = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 30}))
    admin, coordinator, faucet = (Account.from_key(k) for k in HARDHAT_KEYS)
    try:
        addresses = await deploy_contracts(w3, admin, coordinator.address, TEST_DEPLOY)
        yield ChainEnv("hardhat", w3, addresses, await w3.eth.chain_id, admin, coordinator, faucet)
    finally:
        await w3.provider.disconnect()


@pytest.fixture(params=["embedded", "hardhat"])
async def chain_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChainEnv]:
    """Fresh contracts on the embedded chain, then on the Hardhat node: the same suite runs on both."""
    if request.param == "embedded":
        async for env in _embedded(tmp_path):
            yield env
    else:
        async for env in _hardhat(request.getfixturevalue("hardhat_url")):
            yield env


@pytest.fixture
async def embedded_env(tmp_path: Path) -> AsyncIterator[ChainEnv]:
    async for env in _embedded(tmp_path):
        yield env
