"""`python -m tests.hosts._skewed SECONDS ARGS...`: runs `helium ARGS` in a process whose wall clock is
SECONDS off (time.time and time.time_ns), like a host whose clock has drifted. A test double of the
clock only; everything else is the real program."""

from __future__ import annotations

import sys
import time


def main() -> int:
    offset = float(sys.argv[1])
    real, real_ns = time.time, time.time_ns
    time.time = lambda: real() + offset
    time.time_ns = lambda: real_ns() + int(offset * 1e9)
    from helium.cli import main as helium_main

    return helium_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
