"""What the ingress knows of the served model, as a replica describes it (it holds no weights).

It is a `serving.ModelFacts`, as ServedModel is: what tokenizing (the replica's own tokenizer,
pickled across), /v1/model and the limits lowered to the model's context read.
"""

from __future__ import annotations

from ..serving import ServedModel


def describe(served: ServedModel, max_batch_tokens: int) -> dict:
    """What a replica tells the ingress of its model (picklable; the tokenizer travels whole)."""
    return {
        "name": served.name,
        "tokenizer": served.tokenizer,
        "vocab_size": served.vocab_size,
        "max_length": served.max_length,
        "max_request_tokens": served.max_request_tokens,
        "device": str(served.device),
        "dtype": str(served.dtype).removeprefix("torch."),
        "engine": served.engine_name,
        "num_parameters": served.num_parameters(),
        "num_scored_parameters": served.num_scored_parameters(),
        "nbytes": sum(p.nbytes for p in served.model.parameters()),
        "adapter": served.adapter,
        "max_batch_tokens": max_batch_tokens,
        "micro_batches": served.micro_batches(),
    }


class ModelView:
    def __init__(self, described: dict) -> None:
        self.name: str = described["name"]
        self.tokenizer = described["tokenizer"]
        self.vocab_size: int = described["vocab_size"]
        self.max_length: int = described["max_length"]
        self.max_request_tokens: int = described["max_request_tokens"]
        self.device: str = described["device"]
        self.dtype: str = described["dtype"]
        self.engine_name: str = described["engine"]
        self.adapter: str | None = described["adapter"]
        self.nbytes: int = described["nbytes"]
        self.max_batch_tokens: int = described["max_batch_tokens"]
        self._parameters = described["num_parameters"]
        self._scored = described["num_scored_parameters"]
        self._micro_batches = described.get("micro_batches")

    def num_parameters(self) -> int:
        return self._parameters

    def num_scored_parameters(self) -> int:
        return self._scored

    def micro_batches(self) -> dict[str, int | str | bool] | None:
        return self._micro_batches
