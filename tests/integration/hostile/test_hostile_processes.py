"""Hostile input against real processes (issue #14 item 1): one small body of 100,000 nested `[` used to
kill the coordinator with a segfault (its JSON parser recursed past the C stack: py_ecc had raised the
recursion limit to 100,000), and the same file crashed `helium task submit`."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from tests.support.procs import REPO, spawn

DEEP = b"[" * 100_000


def _post(http_addr: str, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _get_status(http_addr: str, path: str) -> int:
    host, port = http_addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    data = tmp_path_factory.mktemp("coord")
    proc = spawn(["-m", "helium.cli", "coordinator", "--data-dir", str(data), "--chain", "none", "--port", "0",
                  "--http-port", "0"], "coordinator")  # fmt: skip
    try:
        line = proc.wait_for("ready ", timeout=90)
        fields = dict(kv.split("=", 1) for kv in line.split()[1:])
        yield proc, fields["grpc"], fields["http"]
    finally:
        proc.terminate()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_deep_body_is_refused_and_the_coordinator_lives(coordinator):
    proc, _grpc, http_addr = coordinator
    for path in ("/v1/chat/completions", "/v1/images/generations"):
        status, body = _post(http_addr, path, DEEP)
        assert status == 400, body
        assert body["error"]["code"] == "body_too_deep"
        status, body = _post(http_addr, path, b"[" * 50_000 + b"]" * 50_000)
        assert status == 400 and body["error"]["code"] == "body_too_deep"
    status, body = _post(http_addr, "/v1/chat/completions", b'{"model": "a/b", "messages": []}' + b" " * (5 << 20))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, body = _post(http_addr, "/v1/chat/completions", b'{"model": "\xff"}')
    assert status == 400, body
    assert proc.popen.poll() is None, proc.tail()
    assert _get_status(http_addr, "/v1/models") < 500  # still serving


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_task_submit_of_a_deep_file_is_a_one_line_error(coordinator, tmp_path):
    _proc, grpc_addr, _http = coordinator
    task_file = tmp_path / "deep.json"
    task_file.write_bytes(DEEP)
    out = subprocess.run([sys.executable, "-m", "helium.cli", "task", "submit", str(task_file), "--coordinator",
                          grpc_addr, "--key", str(tmp_path / "creator.key")],
                         capture_output=True, text=True, timeout=90, cwd=REPO)  # fmt: skip
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nested more than 64 levels" in lines[0] and str(task_file) in lines[0], out.stderr
