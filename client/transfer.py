"""The weight-transfer wire, shaped like vLLM's: the control calls' JSON, and the bucket plan.

The trainer (rank 0) and every server (ranks 1..N) join one process group of their own; the HTTP
calls say what is about to be broadcast, and the tensors go over the group:

    POST /init_weight_transfer_engine  {"init_info": {master_address, master_port, rank_offset,
                                                      world_size}}
    POST /start_weight_update          {}
    POST /update_weights               {"update_info": {names, dtype_names, shapes, packed, ...}}
    POST /finish_weight_update         {"weight_version": 12}

Field names and defaults are vLLM's (`vllm/distributed/weight_transfer/nccl_engine.py`,
`NCCLWeightTransferInitInfo` / `NCCLWeightTransferUpdateInfo`); `backend` and `full` are ours.
Torch-free: the server and the sender import this module, nothing else describes these shapes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, StrictStr, field_validator, model_validator

from .schema import WeightVersion, _Strict
from .wire import SAFETENSORS_DTYPES

# vLLM's defaults (packed_tensor.py): producer and consumer must agree on the buffer size.
DEFAULT_PACKED_BUFFER_SIZE_BYTES = 1 << 30
DEFAULT_PACKED_NUM_BUFFERS = 2
# dtype_names are torch's names without "torch." (vLLM style: "bfloat16"); these can be sent.
TRANSFER_DTYPES: tuple[str, ...] = tuple(SAFETENSORS_DTYPES)

Backend = Literal["gloo", "nccl"]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]


class InitInfo(_Strict):
    master_address: StrictStr = Field(description="Where the trainer (rank 0) listens: its IP.")
    master_port: Port = Field(description="The trainer's rendezvous (TCPStore) port.")
    rank_offset: Annotated[StrictInt, Field(ge=1)] = Field(
        description="This server's rank in the group (each server is one rank; trainer = 0)."
    )
    world_size: Annotated[StrictInt, Field(ge=2)] = Field(
        description="Trainer plus every server that joins: 1 + number of servers."
    )
    backend: Backend | None = Field(
        None,
        description="Ours, not vLLM's: gloo (CPU tensors) or nccl (GPU); default nccl when the "
        "server's model is on CUDA, else gloo. Trainer and servers must agree.",
    )
    packed: bool | None = Field(
        None,
        description="Accepted from clients that send it here; packing is chosen per update "
        "(update_info.packed), as vLLM does.",
    )

    @model_validator(mode="after")
    def _rank_in_world(self) -> InitInfo:
        if self.rank_offset >= self.world_size:
            raise ValueError(
                f"rank_offset {self.rank_offset} is outside world_size {self.world_size} "
                "(ranks are 0 for the trainer, 1..world_size-1 for the servers)"
            )
        return self


class InitWeightTransferRequest(_Strict):
    """POST /init_weight_transfer_engine: join the trainer's group (answers once everyone has)."""

    init_info: InitInfo


class StartWeightUpdateRequest(_Strict):
    """POST /start_weight_update: open an update; staged tensors serve only after finish."""

    is_checkpoint_format: bool = Field(
        True, description="vLLM's flag; only checkpoint (Hugging Face) names are served here."
    )


class UpdateInfo(_Strict):
    names: list[StrictStr] = Field(min_length=1, description="Tensors in broadcast order.")
    dtype_names: list[StrictStr] = Field(description="torch dtype names, e.g. 'bfloat16'.")
    shapes: list[list[Annotated[StrictInt, Field(ge=0)]]]
    packed: bool = Field(
        False, description="Tensors concatenated into buckets (else one broadcast per tensor)."
    )
    packed_buffer_size_bytes: Annotated[StrictInt, Field(gt=0)] = DEFAULT_PACKED_BUFFER_SIZE_BYTES
    packed_num_buffers: Annotated[StrictInt, Field(ge=1)] = DEFAULT_PACKED_NUM_BUFFERS

    @model_validator(mode="after")
    def _same_lengths(self) -> UpdateInfo:
        n = len(self.names)
        for field in ("dtype_names", "shapes"):
            if len(getattr(self, field)) != n:
                raise ValueError(
                    f"`{field}` should be of the same size as `names`: got "
                    f"{len(getattr(self, field))} and {n}"
                )
        seen: set[str] = set()
        for k, name in enumerate(self.names):
            if name in seen:
                raise ValueError(f"names[{k}]: tensor {name!r} is listed twice")
            seen.add(name)
        return self


class UpdateWeightsRequest(_Strict):
    """POST /update_weights: receive these tensors over the group (answers when all arrived)."""

    update_info: UpdateInfo


class FinishWeightUpdateRequest(_Strict):
    """POST /finish_weight_update: apply the staged update in one swap, as `weight_version`."""

    weight_version: WeightVersion | StrictStr | None = Field(
        None,
        description="The new version, above the served one; vLLM sends a string, so a decimal "
        "string is accepted. Default: served + 1.",
    )
    full: bool = Field(False, description="Ours: refuse unless every parameter was sent.")

    @field_validator("weight_version")
    @classmethod
    def _integer_version(cls, value: int | str | None) -> int | None:
        if isinstance(value, str):
            if not value.isdigit():
                raise ValueError(
                    f"weight_version {value!r} is not a non-negative integer (versions here are "
                    "integers that only increase)"
                )
            return int(value)
        return value

    def version(self) -> int | None:
        return None if self.weight_version is None else int(self.weight_version)


TransferState = Literal["closed", "joined", "updating", "receiving"]


class TransferStatus(BaseModel):
    """Where this server's weight transfer stands (every control call but finish answers one)."""

    message: str = Field(description="vLLM's answer text, e.g. 'Weight transfer initialized'.")
    state: TransferState = Field(
        description="closed: no group; joined: in a group, no update open; updating: an update is "
        "open (start called); receiving: tensors are arriving now."
    )
    backend: Backend | None = None
    rank: int | None = None
    world_size: int | None = None
    master: str | None = Field(None, description="host:port of the trainer's rendezvous.")
    staged_tensors: int = Field(0, description="Tensors received and validated, not yet served.")
    staged_bytes: int = 0
    expires_in_s: float | None = Field(
        None, description="An open update untouched this long is dropped and the group closed."
    )


class WorldSize(BaseModel):
    """GET /get_world_size: ranks this server takes in a group (always 1 here)."""

    world_size: int


def bucket_plan(nbytes: list[int], packed: bool, buffer_size_bytes: int) -> list[range]:
    """Which tensors (by index, in order) travel in each broadcast.

    vLLM's rule (packed_tensor.py): tensors are added to a bucket until its size passes
    `buffer_size_bytes`, the tensor that passes it included; unpacked, each tensor is its own.
    Both ends derive the same plan from the same metadata, so no sizes travel with the data.
    """
    if not packed:
        return [range(k, k + 1) for k in range(len(nbytes))]
    out, start, size = [], 0, 0
    for k, n in enumerate(nbytes):
        size += n
        if size > buffer_size_bytes:
            out.append(range(start, k + 1))
            start, size = k + 1, 0
    if start < len(nbytes):
        out.append(range(start, len(nbytes)))
    return out


__all__ = [
    "DEFAULT_PACKED_BUFFER_SIZE_BYTES",
    "DEFAULT_PACKED_NUM_BUFFERS",
    "TRANSFER_DTYPES",
    "FinishWeightUpdateRequest",
    "InitInfo",
    "InitWeightTransferRequest",
    "StartWeightUpdateRequest",
    "TransferStatus",
    "UpdateInfo",
    "UpdateWeightsRequest",
    "WorldSize",
    "bucket_plan",
]
