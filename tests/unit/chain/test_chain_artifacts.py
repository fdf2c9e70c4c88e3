"""The committed artifacts are what the pinned solc-js builds from the sources; a stale one is caught."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from chain._artifacts import load_artifact

ROOT = Path(__file__).resolve().parents[3]


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "chain/build.js", "--check"], cwd=root, capture_output=True, text=True, timeout=120)


def test_artifacts_are_fresh() -> None:
    out = _check(ROOT)
    assert out.returncode == 0, out.stderr


def test_a_stale_artifact_is_detected(tmp_path: Path) -> None:
    (tmp_path / "chain").mkdir()
    shutil.copy(ROOT / "chain" / "build.js", tmp_path / "chain" / "build.js")
    shutil.copytree(ROOT / "chain" / "contracts", tmp_path / "chain" / "contracts")
    shutil.copytree(ROOT / "chain" / "artifacts", tmp_path / "chain" / "artifacts")
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    src = tmp_path / "chain" / "contracts" / "NetworkStats.sol"
    src.write_text(src.read_text().replace("uint64 public kickOuts;", "uint64 public kickOuts;\n    uint64 public extra;"))
    out = _check(tmp_path)
    assert out.returncode == 1 and "NetworkStats.json" in out.stderr


def test_artifacts_load() -> None:
    for name in ("TaskLedger", "NodeStaking", "NetworkStats", "test/MaliciousReceiver"):
        art = load_artifact(name)
        assert art.bytecode and any(i["type"] == "function" for i in art.abi)
    data = json.loads((ROOT / "chain" / "artifacts" / "TaskLedger.json").read_text())
    assert data["compiler"].startswith("solc-0.8.30")
