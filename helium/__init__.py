"""Helium: a verifiable GPU task network.

`helium.v1` holds the generated protobuf contracts (package `helium.v1`),
`helium.tasks` the task definitions built on them (JSON loading, validation,
canonical encoding, JSON Schema), and `helium.cli` the `helium` command.
"""

__version__ = "0.1.0"

import os as _os

from helium._limits import restore_recursion_limit as _restore_recursion_limit

# eth-hash (keccak for eth_utils, eth_account, web3, py-evm) picks its backend on first use: prefer the
# C keccak of safe-pysha3 (a dependency) over pycryptodome's, ~9x less time per hash.
_os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

# Every entry point imports this package first: undo py_ecc's recursion limit of 100,000 here, once.
_restore_recursion_limit()
