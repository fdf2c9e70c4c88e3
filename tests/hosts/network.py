"""A whole Helium network across namespaces, TLS on every link:

    chain  198.18.0.2   `helium chain` on its loopback + a TLS front on :8546 (the dev chain speaks HTTP)
    coord  198.18.0.3   `helium coordinator` (bundled relay and gateway), TLS, --chain https://chain:8546
    client 198.18.0.4   the creator (tests.hosts._tools submit)
    relay  198.18.0.5   `helium relay`, TLS (only with relay=True)
    w<i>   198.18.0.1x  `helium worker --executor instant`, TLS, keys staked on the chain

    net = HostNet(hosts, tmp_path, workers=3)
    net.start()                       # everything ready (raises naming the part that was not)
    out = net.submit(n=10)            # the creator's summary (tests.hosts._tools submit)
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

from eth_account import Account

from chain.signing import load_or_create_key
from tests.hosts.netns import Host, Hosts
from tests.hosts.pki import Pki
from tests.support.procs import Proc

__all__ = ["HostNet"]

CHAIN_RPC_PORT = 8545
CHAIN_TLS_PORT = 8546
COORD_PORT = 50051
RELAY_PORT = 50052


class HostNet:
    def __init__(self, hosts: Hosts, root: Path, *, workers: int = 3, chain: bool = True, relay: bool = False,
                 heartbeat_s: float = 1.0, settlement_interval_s: float = 1.0, task_timeout_s: float = 120.0,
                 worker_args: list[str] | None = None, worker_env: dict | None = None,
                 coordinator_toml: str = "", loopback: bool = False) -> None:  # fmt: skip
        self.hosts = hosts
        self.root = Path(root)
        self.pki = Pki(self.root / "pki")
        self.use_chain = chain
        self.heartbeat_s = heartbeat_s
        self.settlement_interval_s = settlement_interval_s
        self.task_timeout_s = task_timeout_s
        self.worker_args = worker_args or []
        self.worker_env = worker_env or {}
        self.coordinator_toml = coordinator_toml
        if loopback:  # every part in one namespace, on 127.0.0.1 (the baseline of bench.hosts)
            box = hosts.host("box")

            def make(name: str, _last: int | None = None) -> Host:
                return Host(name, box.ns, "127.0.0.1")
        else:
            make = hosts.host
        self.chain = make("chain") if chain else None
        self.coord = make("coord")
        self.client = make("client")
        self.relay = make("relay") if relay else None
        self.workers = [make(f"w{i}", 10 + i) for i in range(workers)]
        self.procs: dict[str, Proc] = {}
        self.address = self.coord.addr(COORD_PORT)
        self.creator_key = "0x" + Account.create().key.hex()
        self.chain_meta: dict = {}
        self.nodes: dict[str, str] = {}  # worker host name -> node address

    # --- parts ------------------------------------------------------------------------------------

    def start(self, *, workers: bool = True) -> None:
        """The chain first (the others need its keys), then the relay, the coordinator and the workers'
        stakes side by side, then the workers."""
        self.hosts.start()
        if self.chain is not None:
            self.start_chain()
        waits = []
        if self.relay is not None:
            waits.append((self.start_relay(wait=False), "ready"))
        waits.append((self.start_coordinator(wait=False), "ready grpc="))
        if workers:
            self.stake(self.workers)
        for proc, prefix in waits:
            proc.wait_for(prefix, 90)
        if workers:
            self.start_workers(self.workers, staked=True)

    def start_chain(self) -> None:
        assert self.chain is not None
        d = self.root / "chain"
        p = self.procs["chain"] = self.hosts.spawn(self.chain, [
            "chain", "--data-dir", str(d), "--host", "127.0.0.1", "--port", str(CHAIN_RPC_PORT),
            "--log-level", "warning"], "chain")  # fmt: skip
        p.wait_for("ready rpc=", 90)
        cert, key = self.pki.issue("chain", self.chain.ip)
        tls = self.procs["chain-tls"] = self.hosts.spawn(self.chain, [
            "-m", "tests.hosts._tools", "tls-proxy", self.chain.addr(CHAIN_TLS_PORT),
            f"127.0.0.1:{CHAIN_RPC_PORT}", str(cert), str(key)], "chain-tls", helium=False)  # fmt: skip
        tls.wait_for("ready", 30)
        self.chain_meta = json.loads((d / "devchain.json").read_text())
        self.creator_key = self.chain_meta["keys"]["creator"]

    @property
    def chain_url(self) -> str:
        assert self.chain is not None
        return f"https://{self.chain.ip}:{CHAIN_TLS_PORT}"

    def start_relay(self, wait: bool = True) -> Proc:
        assert self.relay is not None
        cert, key = self.pki.issue("relay", self.relay.ip)
        args = ["relay", "--data-dir", str(self.root / "relay"), "--host", self.relay.ip, "--port", str(RELAY_PORT),
                "--coordinator-address", self.coordinator_key().address, "--tls-cert", str(cert),
                "--tls-key", str(key)]  # fmt: skip
        if self.chain_meta:
            args += ["--chain-id", str(self.chain_meta["chain_id"]),
                     "--verifying-contract", self.chain_meta["addresses"]["ledger"]]  # fmt: skip
        p = self.procs["relay"] = self.hosts.spawn(self.relay, args, "relay")
        if wait:
            p.wait_for("ready", 60)
        return p

    def coordinator_key(self):
        """The coordinator's key: on a chain, the dev chain's coordinator-role key."""
        path = self.root / "coord" / "coordinator.key"
        if self.chain_meta and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.chain_meta["keys"]["coordinator"].removeprefix("0x"))
            path.chmod(0o600)
        return load_or_create_key(path)

    def start_coordinator(self, extra: list[str] | None = None, wait: bool = True) -> Proc:
        data = self.root / "coord"
        self.coordinator_key()
        cert, key = self.pki.issue("coord", self.coord.ip)
        toml = (f"[coordinator]\ntask_timeout_s = {self.task_timeout_s}\n{self.coordinator_toml}\n"
                f"[settlement]\nbatch_interval = {self.settlement_interval_s}\nbatch_max_tasks = 50\n")  # fmt: skip
        (self.root / "coordinator.toml").write_text(toml)
        env = {"SSL_CERT_FILE": str(self.pki.ca_path)}  # the chain's TLS front is signed by the test CA
        chain = "none"
        if self.chain is not None:
            chain = self.chain_url
            addresses = data / "chain-addresses.json"
            addresses.write_text(json.dumps(self.chain_meta["addresses"]))
        args = ["coordinator", "--config", str(self.root / "coordinator.toml"), "--data-dir", str(data),
                "--host", self.coord.ip, "--port", str(COORD_PORT), "--http-port", "-1", "--tls-cert", str(cert),
                "--tls-key", str(key), "--chain", chain, "--heartbeat-interval-s", str(self.heartbeat_s),
                "--log-level", "info", *(extra or [])]  # fmt: skip
        if self.relay is not None:
            args += ["--relay-address", self.relay.addr(RELAY_PORT)]
        p = self.procs["coord"] = self.hosts.spawn(self.coord, args, "coordinator", env=env)
        if wait:
            p.wait_for("ready grpc=", 90)
        return p

    def worker_key_file(self, w: Host) -> Path:
        return self.root / w.name / "keys" / "node-0.key"

    def stake(self, workers: list[Host]) -> None:
        if self.chain is None:
            return
        files = [str(self.worker_key_file(w)) for w in workers]
        for f in files:
            load_or_create_key(f)
        r = self.hosts.run(self.chain, ["-m", "tests.hosts._tools", "stake", f"http://127.0.0.1:{CHAIN_RPC_PORT}",
                                        str(self.root / "chain"), *files], 120, helium=False)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"staking failed: {r.stderr[-2000:]}")

    def worker_argv(self, w: Host, *extra: str, tls_ca: Path | None = None) -> list[str]:
        return ["worker", "--coordinator", self.address, "--tls-ca", str(tls_ca or self.pki.ca_path),
                "--executor", "instant", "--device", "cpu", "--data-dir", str(self.root / w.name),
                "--reconnect-max-attempts", "1000", "--reconnect-max-time", "600", "--log-level", "info",
                *self.worker_args, *extra]  # fmt: skip

    def start_workers(self, workers: list[Host], *extra: str, timeout: float = 90,
                      staked: bool = False) -> dict[str, str]:  # fmt: skip
        """Starts (and stakes) each worker; returns host name -> node address once all are registered."""
        if not staked:
            self.stake(workers)
        for w in workers:
            self.procs[w.name] = self.hosts.spawn(w, self.worker_argv(w, *extra), w.name, env=self.worker_env)
        for w in workers:
            self.nodes[w.name] = self.procs[w.name].wait_for("ready node=", timeout).split("node=")[1].split()[0]
        return {w.name: self.nodes[w.name] for w in workers}

    def host_of(self, node: str) -> Host:
        return next(w for w in self.workers if self.nodes.get(w.name) == node)

    # --- the creator ------------------------------------------------------------------------------

    def submit(self, n: int, *, timeout: float = 60, settled: bool = False, extra: list[str] | None = None,
               tag: str = "", wait: bool = True) -> dict:  # fmt: skip
        """Sends n GPT tasks from the client host over TLS and waits for their outcomes (summary dict);
        with wait=False returns {"ids": [...]} once they are accepted."""
        extra = [*(extra or []), *([] if wait else ["--no-wait"])]
        return self._client(n, timeout, settled, extra, tag)

    def wait(self, ids: list[str], *, timeout: float = 60, settled: bool = False) -> dict:
        """Waits (from the client host) for the outcome of each task; the summary dict."""
        return self._client(0, timeout, settled, ["--wait", ",".join(ids)], "")

    def peek(self, ids: list[str]) -> dict:
        """The tasks' states now (summary dict), without waiting."""
        return self._client(0, 30, False, ["--wait", ",".join(ids), "--peek"], "")

    def _client(self, n: int, timeout: float, settled: bool, extra: list[str], tag: str) -> dict:
        args = ["-m", "tests.hosts._tools", "submit", "--coordinator", self.address, "--tls-ca",
                str(self.pki.ca_path), "--creator-key", self.creator_key, "--n", str(n), "--timeout", str(timeout),
                "--tag", tag or f"{self.hosts.tag}-{time.time_ns()}", *(["--settled"] if settled else []), *extra]  # fmt: skip
        r = self.hosts.run(self.client, args, timeout + 60, helium=False)
        if r.returncode != 0:
            raise AssertionError(f"client failed ({r.returncode}): {r.stderr[-3000:]}\n{r.stdout[-1000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def admin(self, *cmd: str) -> dict:
        """`helium nodes|stats --json` from the client host over TLS, with the coordinator's admin token."""
        token = (self.root / "coord" / "admin.token").read_text().strip()
        r = self.hosts.run(self.client, [*cmd, "--coordinator", self.address, "--tls-ca", str(self.pki.ca_path),
                                         "--admin-token", token, "--json"], 30)  # fmt: skip
        if r.returncode != 0:
            raise AssertionError(f"helium {' '.join(cmd)}: {r.stderr[-2000:]}")
        return json.loads(r.stdout)

    # --- what the coordinator did -----------------------------------------------------------------

    def coord_log(self, since: int = 0) -> list[str]:
        return self.procs["coord"].lines[since:]

    def dispatched_nodes(self, task_id: str, timeout: float = 30) -> list[str]:
        """The nodes the coordinator first sent `task_id` to (from its log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.coord_log():
                if "task_dispatched" in line and f"task_id={task_id}" in line:
                    return re.findall(r"0x[0-9a-fA-F]{40}", line.split("nodes=[", 1)[1].split("]", 1)[0])
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} not dispatched within {timeout:.0f}s")

    def assignments(self, task_id: str) -> list[tuple[str, str]]:
        """(node, state) of each assignment of `task_id`, read from the coordinator's database."""
        db = sqlite3.connect(f"file:{self.root / 'coord' / 'coordinator.db'}?mode=ro", uri=True, timeout=10)
        try:
            return list(db.execute("SELECT node, state FROM assignments WHERE task_id = ? ORDER BY leased_ms",
                                   (task_id,)))  # fmt: skip
        finally:
            db.close()
