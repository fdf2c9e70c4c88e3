"""`helium gateway` standalone, as a subprocess in front of a (scripted) coordinator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx


async def test_standalone_gateway_prints_ready_serves_and_stops_on_sigterm(fake_coordinator, tmp_path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from helium.cli import main; sys.exit(main(sys.argv[1:]))", "gateway",
        "--coordinator", fake_coordinator.target, "--data-dir", str(tmp_path), "--http-port", "0",
        "--admin-token", "admin-secret",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("ready http=127.0.0.1:") and " creator=0x" in line
        http = line.split()[1].split("=", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://{http}") as client:
            models = (await client.get("/v1/models")).json()
            assert "tiny" in [m["id"] for m in models["data"]]
            assert len((await client.get("/api/network")).json()["nodes"]) == 3
        assert (tmp_path / "gateway" / "creator.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
