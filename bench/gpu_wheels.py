"""Fetches the wheels that `bench/gpu_check.sh` needs on a lent GPU machine into `.whl/` (git-ignored).

The GPU machine reaches no registry: what its image lacks must travel with the working tree as
wheels, within the 64 MiB the device tool carries. This lists the distributions the worker's
executors, the GPU tests and the check itself import that the image does not ship (its image has
torch, transformers, accelerate, safetensors, tokenizers, numpy, pillow, scipy, grpcio, pytest,
huggingface_hub, ...), each at the version this venv has, for CPython 3.12 on manylinux x86-64.

    python -m bench.gpu_wheels            # download into .whl/, print the total size
    python -m bench.gpu_wheels --list     # print NAME==VERSION lines only
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

# Distributions the device image lacks, that the executors, tiny models, GPU tests and the check import.
# protobuf rides along because the generated helium.v1 code needs a newer runtime than images often ship.
CARRY = (
    "diffusers", "structlog", "tenacity", "ImageHash", "PyWavelets", "protobuf",
    "eth-account", "eth-abi", "eth-hash", "eth-keyfile", "eth-keys", "eth-rlp", "eth-typing", "eth-utils",
    "hexbytes", "rlp", "parsimonious", "py-ecc", "pycryptodome", "safe-pysha3", "coincurve", "cffi",
    "pycparser", "cytoolz", "bitarray", "ckzg", "pydantic", "pydantic-core", "annotated-types",
    "typing-inspection", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
    "sortedcontainers",
)
# bitsandbytes' wheel holds kernels for every CUDA and ROCm version (41 MiB); slimmed to the CPU kernels and
# those of the card's CUDA major (the GPU machine's torch is built for CUDA 13), it travels if it fits.
OPTIONAL = ("bitsandbytes",)
BNB_KEEP = ("libbitsandbytes_cpu", "libbitsandbytes_cuda13")
LIMIT_BYTES = 64 * 1024 * 1024
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64")


def pins(names: tuple[str, ...] = CARRY) -> list[str]:
    """`NAME==VERSION` for each name, at the version installed here (so both sides run the same code)."""
    return [f"{n}=={md.version(n)}" for n in names]


def download(dest: Path, spec: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, spec], check=True, timeout=600)


def slim_bnb(wheel: Path, keep: tuple[str, ...] = BNB_KEEP) -> int:
    """Rewrites bitsandbytes' wheel in place without the native kernels it will not load; returns bytes saved.
    RECORD keeps the hashes of what stays, so the slim wheel still installs as itself."""
    import zipfile

    before = wheel.stat().st_size
    drop = lambda name: "/libbitsandbytes_" in name and not any(k in name for k in keep)  # noqa: E731
    tmp = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line + b"\n" for line in data.splitlines() if not drop(line.split(b",")[0].decode()))
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before - wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=Path(".whl"))
    ap.add_argument("--list", action="store_true", help="print the pins and exit")
    ap.add_argument("--repo-bytes", type=int, default=4 * 1024 * 1024, help="room kept for the working tree")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(pins()))
        return 0
    args.dest.mkdir(exist_ok=True)
    for spec in pins():
        download(args.dest, spec)
    total = sum(f.stat().st_size for f in args.dest.glob("*.whl"))
    for spec in pins(OPTIONAL):
        probe = args.dest / "_optional"
        probe.mkdir(exist_ok=True)
        download(probe, spec)
        for wheel in probe.glob("bitsandbytes-*.whl"):
            print(f"{wheel.name}: slimmed by {slim_bnb(wheel) / 2**20:.1f} MiB (kernels kept: {', '.join(BNB_KEEP)})")
        size = sum(f.stat().st_size for f in probe.glob("*.whl"))
        if total + size + args.repo_bytes <= LIMIT_BYTES:
            for f in probe.glob("*.whl"):
                f.rename(args.dest / f.name)
            total += size
            print(f"{spec}: {size / 2**20:.1f} MiB, carried")
        else:
            print(f"{spec}: {size / 2**20:.1f} MiB, left behind (over the carry limit)")
        for f in probe.glob("*"):
            f.unlink()
        probe.rmdir()
    print(f"wheels in {args.dest}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
