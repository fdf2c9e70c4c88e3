"""Chain primitives: contracts, artifacts, the coordinator's web3 client, the embedded
dev chain, and the Ethereum identity and signing helpers every part uses."""
