"""The README's quick starts run as written (issue #16), so they cannot drift from the code.

Each fenced block marked ```sh quickstart-NAME runs in bash (`set -euo pipefail`) in an empty folder, with
the `helium` of this checkout first on PATH. Only the default ports are swapped for free ones (50051 gRPC,
50052 relay, 8080 HTTP), so a run never collides with anything else on the host; background jobs the block
starts are stopped with SIGTERM when it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("gateway_dev")]

REPO = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"^```sh quickstart-(\w+)\n(.*?)^```$", re.S | re.M)
DEFAULT_PORTS = ("50051", "50052", "8080")


def quickstarts() -> dict[str, str]:
    return {m.group(1): m.group(2) for m in BLOCK.finditer((REPO / "README.md").read_text())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_has_a_quick_start_for_each_kind_of_user():
    assert set(quickstarts()) == {"app", "gpu", "network"}


@pytest.mark.parametrize("name", ["app", "gpu", "network"])
def test_a_quick_start_runs_as_written(name, tmp_path):
    script = quickstarts()[name]
    ports = {default: str(_free_port()) for default in DEFAULT_PORTS}
    for default, port in ports.items():
        script = re.sub(rf"\b{default}\b", port, script)
    wrapped = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIUM_")}
    # What runs on its default ports without a flag (`helium dev`) gets the same free ones through the
    # environment (flags > HELIUM_* > defaults); an explicit --port in the block wins, already swapped.
    env.update(HELIUM_PORT=ports["50051"], HELIUM_HTTP_PORT=ports["8080"])
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(["bash", "-c", wrapped], cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=840)
    finally:  # a block cut short must not leave its network behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}{logs}"
    if name == "app":
        assert '"state": "validated"' in done.stdout or '"state": "settled"' in done.stdout
        assert "chat page:" in done.stdout
    if name == "gpu":
        assert re.search(r"^0x[0-9a-fA-F]{40}$", done.stdout, re.M)
        assert '"connected": true' in done.stdout and "tasks_paid:" in done.stdout and "unlock_at:" in done.stdout
    if name == "network":
        assert '"verifying_contract"' in done.stdout and done.stdout.count('"nodes_by_state"') == 2
