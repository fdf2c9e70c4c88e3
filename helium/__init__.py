"""Helium: a verifiable GPU task network.

`helium.v1` holds the generated protobuf contracts (package `helium.v1`),
`helium.tasks` the task definitions built on them (JSON loading, validation,
canonical encoding, JSON Schema), and `helium.cli` the `helium` command.
"""

__version__ = "0.1.0"
