"""What is being served."""

from __future__ import annotations

from fastapi import APIRouter

from vigor_client.schema import ModelInfo

from ..deps import ApiAuth, RuntimeDep, ServedDep

router = APIRouter(tags=["model"], dependencies=[ApiAuth])


@router.get("/v1/model")
async def model_info(served: ServedDep, runtime: RuntimeDep) -> ModelInfo:
    return ModelInfo(
        model=served.name,
        weight_version=runtime.slot.version,
        device=str(served.device),
        dtype=str(served.dtype).removeprefix("torch."),
        engine=served.engine_name,
        num_parameters=served.num_parameters(),
        num_scored_parameters=served.num_scored_parameters(),
        adapter=served.adapter,
        base_weights=runtime.slot.version == 0,
        vocab_size=served.vocab_size,
        max_sequence_length=served.max_length,
        limits={**runtime.pipeline.limits.as_dict(), "max_batch_tokens": runtime.max_batch_tokens},
        reward_spec=runtime.pipeline.variants.default,
        reward_specs=sorted(runtime.pipeline.variants.named),
        estimator=runtime.pipeline.estimator,
        watch=runtime.watcher.status() if runtime.watcher is not None else None,
        staleness=runtime.staleness.status(runtime.slot.version),
        micro_batches=served.micro_batches(),
    )
