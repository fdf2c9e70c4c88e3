"""TLS across hosts, and connecting to the wrong thing: every link of a network spread over namespaces is
TLS; plaintext off loopback, a certificate from another CA, a name that does not resolve, and a server
that is not Helium each give a clear error, on both sides where there are two, and never a hang."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.hosts.netns import HELIUM
from tests.hosts.network import HostNet
from tests.hosts.pki import Pki

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("hosts-fast")]

QUICK = ["--reconnect-max-attempts", "3", "--connect-timeout", "3", "--log-level", "warning"]


def _worker(net: HostNet, name: str, *args: str) -> list[str]:
    return ["worker", *args, "--executor", "instant", "--device", "cpu", "--data-dir", str(net.root / name), *QUICK]


def _finish(procs: dict[str, subprocess.Popen], timeout: float) -> dict[str, tuple[int, str, float]]:
    """Waits for each process (bounded); name -> (exit status, output, seconds)."""
    start, out = time.monotonic(), {}
    for name, p in procs.items():
        try:
            stdout, _ = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, _ = p.communicate()
            raise AssertionError(f"{name} hung for {timeout:.0f}s:\n{stdout[-2000:]}") from None
        out[name] = (p.returncode, stdout, time.monotonic() - start)
    return out


def _popen(net: HostNet, host, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(net.hosts.command(host, [HELIUM, *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def test_tasks_validate_and_settle_with_tls_on_every_link(fast_net):
    out = fast_net.submit(6, settled=True, timeout=90)
    assert out["states"] == {"TASK_STATE_SETTLED": 6}, out
    assert all(len(n) >= 2 for n in out["nodes"]), out
    coord = "\n".join(fast_net.procs["coord"].lines)
    # The coordinator serves TLS, reaches the chain over TLS, and sends workers to the relay's host.
    assert "tls=True" in coord and f"chain={fast_net.chain_url}" in coord
    assert fast_net.chain_url.startswith("https://")
    peers = {line.split("peer=ipv4:")[1].split(":")[0] for line in coord.splitlines() if "node_attached" in line}
    assert {w.ip for w in fast_net.workers} <= peers, peers  # (other tests add workers on the client's host)
    assert any(fast_net.relay.ip in line for line in fast_net.procs["relay"].lines), "relay not on its host"


def test_plaintext_off_loopback_is_refused_on_both_sides(fast_net):
    net, host = fast_net, fast_net.client
    mark = len(net.procs["coord"].lines)
    procs = {
        "worker-no-ca": _popen(net, host, _worker(net, "p1", "--coordinator", net.address)),
        "worker-insecure": _popen(net, host, _worker(net, "p2", "--coordinator", net.address, "--insecure")),
        "client-no-ca": _popen(net, host, ["stats", "--coordinator", net.address, "--admin-token", "x"]),
        "coordinator-no-cert": _popen(net, net.coord, [
            "coordinator", "--host", net.coord.ip, "--port", "50098", "--data-dir", str(net.root / "plain-coord"),
            "--chain", "none", "--http-port", "-1"]),  # fmt: skip
    }
    done = _finish(procs, 90)
    rc, text, secs = done["worker-no-ca"]
    assert rc == 1 and f"refusing plaintext gRPC to {net.address}" in text and "--tls-ca" in text, text
    assert secs < 30, "refused before a byte is sent: no retries"
    rc, text, _ = done["worker-insecure"]
    assert rc == 1 and "the server speaks TLS and closed the plaintext connection; give --tls-ca" in text, text
    assert text.count("reconnect_backoff") == 0, "a TLS mismatch is not retried"
    rc, text, _ = done["client-no-ca"]
    assert rc == 1 and f"refusing plaintext to {net.address}: give --tls-ca" in text, text
    rc, text, _ = done["coordinator-no-cert"]
    assert rc == 2 and f"refusing plaintext on {net.coord.ip}: give --tls-cert/--tls-key" in text, text
    # The coordinator's side of the plaintext attempt: its TLS layer names the failed handshake.
    server = "\n".join(net.procs["coord"].lines[mark:])
    assert "Handshake failed" in server and "WRONG_VERSION_NUMBER" in server, server[-2000:]


def test_certificate_from_another_ca_is_refused(fast_net, tmp_path):
    other = Pki(tmp_path / "other", "someone-elses-ca")
    net = fast_net
    # A worker that trusts another CA does not accept the coordinator's certificate...
    p1 = _popen(net, net.client, _worker(net, "o1", "--coordinator", net.address, "--tls-ca", str(other.ca_path)))
    # ...and a worker that trusts the right CA does not accept an impostor's, signed by another CA.
    cert, key = other.issue("impostor", net.client.ip)
    imp = net.hosts.spawn(net.client, ["coordinator", "--host", net.client.ip, "--port", "50097", "--chain", "none",
                                       "--data-dir", str(tmp_path / "imp"), "--tls-cert", str(cert),
                                       "--tls-key", str(key), "--http-port", "-1"], "impostor")  # fmt: skip
    imp.wait_for("ready grpc=", 60)
    p2 = _popen(net, net.workers[0], _worker(net, "o2", "--coordinator", net.client.addr(50097),
                                             "--tls-ca", str(net.pki.ca_path)))  # fmt: skip
    done = _finish({"other-ca": p1, "impostor": p2}, 90)
    imp.kill9()
    rc, text, _ = done["other-ca"]
    assert rc == 1, text
    assert f"its certificate is not trusted with --tls-ca {other.ca_path}" in text, text
    assert "reconnect_backoff" not in text, "an untrusted certificate is not retried"
    rc, text, _ = done["impostor"]
    assert rc == 1 and "TLS refused: its certificate is not trusted" in text, text


def test_unresolvable_name_gives_a_clear_error_after_bounded_retries(fast_net):
    net = fast_net
    p = _popen(net, net.client, _worker(net, "d1", "--coordinator", "coordinator.does-not-exist.invalid:50051",
                                        "--tls-ca", str(net.pki.ca_path)))  # fmt: skip
    rc, text, secs = _finish({"worker": p}, 90)["worker"]
    assert rc == 1, text
    assert "cannot resolve host 'coordinator.does-not-exist.invalid'" in text, text
    assert text.count("reconnect_backoff") == 2, "3 attempts, 2 waits between them"


def test_a_server_that_is_not_helium_gives_a_clear_error_never_a_hang(fast_net):
    net = fast_net
    junk = net.hosts.spawn(net.client, ["-m", "tests.hosts._tools", "http-garbage", net.client.addr(8080)], "junk",
                           helium=False)  # fmt: skip
    junk.wait_for("ready", 30)
    target = net.client.addr(8080)
    procs = {
        "tls": _popen(net, net.workers[0], _worker(net, "g1", "--coordinator", target, "--tls-ca", str(net.pki.ca_path))),
        "plain": _popen(net, net.workers[1], _worker(net, "g2", "--coordinator", target, "--insecure")),
    }
    done = _finish(procs, 90)
    junk.kill9()
    rc, text, _ = done["tls"]
    assert rc == 1 and "TLS handshake failed" in text and "does not speak TLS" in text, text
    rc, text, _ = done["plain"]
    assert rc == 1 and "it answered 'HTTP/1.1 400 Bad Request', which is HTTP/1, not gRPC" in text, text
