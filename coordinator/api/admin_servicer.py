"""AdminService: the network operator's view and levers (guarded by the admin credential)."""

from __future__ import annotations

from coordinator.domain import serde
from coordinator.domain.models import NodeRecord
from coordinator.errors import InvalidArgument
from coordinator.service.dispatcher import Dispatcher
from coordinator.service.membership import Membership, NodeAction
from helium.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["AdminServicer"]

class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, dispatcher: Dispatcher, membership: Membership, stats_source=None) -> None:
        self.dispatcher = dispatcher
        self.membership = membership
        # Extra figures (settlements, validation outcomes) from the protocol layer, when present.
        self.stats_source = stats_source

    def _node(self, record: NodeRecord) -> admin_pb2.Node:
        d = self.dispatcher
        session = d.nodes.get(record.address)
        record = session.record if session else record
        running = []
        if session is not None:
            found = (d._find(assignment_id)[1] for assignment_id in session.assigned)
            running = [a.task_id for a in found if a is not None]
        q = d.qos.describe(record, d.now_ms()) if d.qos is not None and hasattr(d.qos, "describe") else {}
        return serde.node_to_pb(
            record, d.node_view_state(record), connected=session is not None, running=running,
            qos=q.get("qos", 0.5), reliability=q.get("reliability", 1.0), mean_score=q.get("mean_score", 0.0),
            scores=q.get("scores", 0), stake=str(q.get("stake", "")),
        )  # fmt: skip

    def _address(self, value: str) -> str:
        from eth_utils import is_address, to_checksum_address

        if not is_address(value):
            raise InvalidArgument(f"address must be a 0x address, got {value!r}", "address")
        return to_checksum_address(value)

    async def ListNodes(self, request, context):
        wanted = {serde.NODE_STATE_FROM_PB[s] for s in request.states}
        nodes = [self._node(r) for r in self.dispatcher.store.list_nodes()]
        return admin_pb2.ListNodesResponse(
            nodes=[n for n in nodes if not wanted or serde.NODE_STATE_FROM_PB[n.state] in wanted]
        )

    async def ListTasks(self, request, context):
        limit = request.limit or 100
        if limit > 1000:
            raise InvalidArgument(f"limit must be <= 1000, got {limit}", "limit")
        states = [serde.TASK_STATE_FROM_PB[s] for s in request.states]
        tasks = self.dispatcher.store.list_tasks(states, limit)
        return admin_pb2.ListTasksResponse(tasks=[serde.task_to_pb(t, self.dispatcher.get(t.task_id)[1])
                                                  for t in tasks])  # fmt: skip

    async def GetStats(self, request, context):
        d = self.dispatcher
        by_state: dict[str, int] = {}
        by_card: dict[str, int] = {}
        for r in d.store.list_nodes():
            state = d.node_view_state(d.nodes[r.address].record if r.address in d.nodes else r)
            by_state[state.value] = by_state.get(state.value, 0) + 1
            by_card[str(r.caps.card)] = by_card.get(str(r.caps.card), 0) + 1
        tasks = {s.value: n for s, n in d.store.count_tasks_by_state().items()}
        depth = {t.value: n for t, n in d.queue.depth_by_type().items()}
        extra = self.stats_source() if self.stats_source else {}

        def counts(m: dict) -> list[admin_pb2.Count]:
            return [admin_pb2.Count(key=k, value=v) for k, v in sorted(m.items())]

        return admin_pb2.GetStatsResponse(
            nodes_by_state=counts(by_state), nodes_by_card=counts(by_card), tasks_by_state=counts(tasks),
            queue_depth_by_type=counts(depth), validation_outcomes=counts(extra.get("validation_outcomes", {})),
            gpus=sum(1 for r in d.store.list_nodes() if r.state.value not in ("quit", "kicked_out", "slashed")),
            settled_batches=extra.get("settled_batches", 0), chain=self._chain_counters(extra.get("chain")),
        )  # fmt: skip

    @staticmethod
    def _chain_counters(chain: dict | None) -> admin_pb2.ChainCounters | None:
        """NetworkStats' counters as the chain part last read them (all strings there); None before a read."""
        if not chain:
            return None
        return admin_pb2.ChainCounters(
            nodes=int(chain["nodes"]), gpus=int(chain["gpus"]), tasks_settled=int(chain["tasks_settled"]),
            slashes=int(chain["slashes"]), kick_outs=int(chain["kick_outs"]),
            fees_settled_wei=chain["fees_settled"], slashed_total_wei=chain["slashed_total"],
        )  # fmt: skip

    async def PauseNode(self, request, context):
        record = self.membership.apply(self._address(request.address), NodeAction.PAUSE, "by the operator")
        return admin_pb2.PauseNodeResponse(node=self._node(record))

    async def ResumeNode(self, request, context):
        record = self.membership.apply(self._address(request.address), NodeAction.RESUME, "by the operator")
        return admin_pb2.ResumeNodeResponse(node=self._node(record))

    async def KickNode(self, request, context):
        record = await self.membership.kick(self._address(request.address), request.reason)
        return admin_pb2.KickNodeResponse(node=self._node(record))

