"""The applications' door: an OpenAI-compatible HTTP gateway in front of the coordinator.

It talks to the coordinator only over gRPC (`helium.v1.TaskService`,
`AdminService`), so the same code runs inside the coordinator process and
standalone (`helium gateway --coordinator HOST:PORT`).
"""

from coordinator.gateway.app import GatewayServer, create_app, serve_gateway
from coordinator.gateway.config import GatewaySettings

__all__ = ["GatewayServer", "GatewaySettings", "create_app", "serve_gateway"]
