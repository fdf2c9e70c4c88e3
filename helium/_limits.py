"""The interpreter's recursion limit, restored once for every Helium process.

Importing `py_ecc` (through eth_account / eth_keyfile, and py-evm) raises `sys.setrecursionlimit` to
100,000. C code that recurses (the `json` scanner, `repr` of nested lists) then overflows the C stack
before Python notices, and one deeply nested request body kills the process with a segfault. This
takes py_ecc's import first (so nothing raises the limit later) and sets the limit back to
`SAFE_RECURSION_LIMIT`: enough for py-evm's 1,024 EVM call frames (it asks for 12,288) and py_ecc's
pairing, and a few times below the depth where a default 8 MiB thread stack overflows in `json`.
"""

from __future__ import annotations

import sys

__all__ = ["SAFE_RECURSION_LIMIT", "restore_recursion_limit"]

SAFE_RECURSION_LIMIT = 12_288


def restore_recursion_limit() -> int:
    """Imports py_ecc (if installed) so its import-time change happens now, then sets the safe limit."""
    try:
        import py_ecc  # noqa: F401 - imported for its side effect, which is undone below
    except ImportError:  # pragma: no cover - a part installed without the Ethereum stack
        pass
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT)
    return SAFE_RECURSION_LIMIT
