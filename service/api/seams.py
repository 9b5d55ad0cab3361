"""What the HTTP layer needs of a runtime, declared: both deployments plug in through these.

`runtime.Runtime` (a plain server: model, worker and weights in this process) and rayserve's
`IngressRuntime` (the same app in front of scoring replicas) both satisfy `ServingRuntime`; the
weight fronts `weights.WeightPlane` and rayserve's `ClusterWeights` both satisfy `WeightFront`.
tests/api/test_seams.py checks both pairs, so a route mounted on one runtime that the other
cannot serve fails there, not in production. The scheduler and the served model have their
seams where their users live: `scoring.scheduler.EngineQueue`, `serving.ModelFacts`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from vigor_client.schema import (
    AdapterRequest,
    CommitRequest,
    ReloadRequest,
    UploadStatus,
    WeightUpdate,
)

from ..metrics import Metrics
from ..scoring import ScoringPipeline
from ..serving import ServingSlot
from ..settings import Settings
from ..weights import IncomingBody, WeightTransfer


@runtime_checkable
class WeightFront(Protocol):
    """The /admin weight calls. `transfer` is None where the vLLM transfer is not served: then
    its routes are not mounted (app.py)."""

    transfer: WeightTransfer | None

    async def reload(self, req: ReloadRequest) -> WeightUpdate: ...

    async def push(self, body: IncomingBody, version: int | None, full: bool) -> WeightUpdate: ...

    def create_upload(self) -> UploadStatus: ...

    async def stage(self, upload_id: str, body: IncomingBody) -> UploadStatus: ...

    async def commit(self, upload_id: str, req: CommitRequest) -> WeightUpdate: ...

    def abort(self, upload_id: str) -> UploadStatus: ...

    async def load_adapter(self, req: AdapterRequest) -> WeightUpdate: ...

    async def push_adapter(
        self, body: IncomingBody, version: int | None, name: str | None, allow_cast: bool
    ) -> WeightUpdate: ...

    async def unload_adapter(self, version: int | None) -> WeightUpdate: ...


@runtime_checkable
class ServingRuntime(Protocol):
    """What `create_app`, its lifespan and the route dependencies use, and nothing more."""

    settings: Settings
    slot: ServingSlot
    metrics: Metrics
    pipeline: ScoringPipeline
    weights: WeightFront

    @property
    def max_batch_tokens(self) -> int: ...

    def start(self, loaded: Any = None) -> None: ...

    async def drain(self, timeout: float) -> int: ...

    async def aclose(self) -> None: ...
