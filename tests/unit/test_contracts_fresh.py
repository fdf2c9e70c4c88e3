"""The committed generated protobuf code matches the .proto files (regenerated with the
pinned grpcio-tools), and buf lint passes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_generated_python_is_fresh(tmp_path):
    protos = sorted(str(p.relative_to(REPO)) for p in (REPO / "proto/helium/v1").glob("*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos], cwd=REPO, check=True)  # fmt: skip
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "helium/v1").iterdir()}
    committed = {p.name: p.read_bytes() for p in (REPO / "helium/v1").iterdir() if p.name != "__init__.py"
                 and p.suffix in (".py", ".pyi")}  # fmt: skip
    stale = sorted(n for n in fresh.keys() | committed.keys() if fresh.get(n) != committed.get(n))
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


@pytest.mark.skipif(not (REPO / "node_modules/.bin/buf").exists(), reason="buf comes from `make install` (npm ci)")
def test_buf_lint():
    run = subprocess.run([str(REPO / "node_modules/.bin/buf"), "lint"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cli_lists_every_subcommand():
    from helium.cli import COMMANDS

    assert set(COMMANDS) >= {"coordinator", "worker", "relay", "dev", "task", "nodes", "stats"}
    assert shutil.which("helium", path=str(Path(sys.executable).parent))
