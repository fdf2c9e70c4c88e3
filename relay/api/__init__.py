"""The relay's gRPC face."""

from relay.api._servicer import RelayServicer
from relay.api._translate import translate_errors

__all__ = ["RelayServicer", "translate_errors"]
