"""Chain primitives: contracts, artifacts, the coordinator's web3 client, the embedded
dev chain, and the Ethereum identity and signing helpers every part uses."""

import os as _os

# eth-hash (keccak for eth_utils, eth_account, web3, py-evm) picks its backend on first use: prefer the
# C keccak of safe-pysha3 (a dependency) over pycryptodome's, ~9x less time per hash.
_os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
