"""TokenCostRouter: each call goes to the replica with the fewest tokens outstanding.

Ray Serve's default router balances the number of requests; a scoring call's cost is its tokens
(one group of 8 long completions is many short ones' work), so this router counts, per replica,
the tokens of the calls it sent there that have not finished, and ranks replicas by that. The
cost travels with the call (`cost=` keyword, the sum of its sequences' lengths). Ties keep Serve's
own order. Ray Serve's RequestRouter API is alpha in 2.60: this is the only module that uses it.
"""

from __future__ import annotations

from collections import defaultdict

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica


class TokenCostRouter(RequestRouter):
    def initialize_state(self, **kwargs) -> None:
        self.outstanding: dict[ReplicaID, int] = defaultdict(int)
        self._sent: dict[str, tuple[ReplicaID, int]] = {}  # request id → (replica, its cost)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        ranked = sorted(candidate_replicas, key=lambda r: self.outstanding[r.replica_id])
        if pending_request is not None:
            cost = int(pending_request.kwargs.get("cost", 1))
            key = pending_request.metadata.internal_request_id
            self._release(key)  # chosen again (a retry): count it once, where it goes now
            self._sent[key] = (ranked[0].replica_id, cost)
            self.outstanding[ranked[0].replica_id] += cost
        return [[r] for r in ranked]

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._release(internal_request_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.outstanding.pop(replica_id, None)

    def _release(self, key: str) -> None:
        sent = self._sent.pop(key, None)
        if sent is not None:
            replica, cost = sent
            self.outstanding[replica] = max(0, self.outstanding[replica] - cost)
