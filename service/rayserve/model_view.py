"""What the ingress knows of the served model, as a replica describes it (it holds no weights).

It stands in for ServedModel where the ingress needs one: tokenizing (the replica's own
tokenizer, pickled across), /v1/model, and the limits lowered to the model's context.
"""

from __future__ import annotations

from types import SimpleNamespace


class ModelView:
    def __init__(self, described: dict) -> None:
        self.name: str = described["name"]
        self.tokenizer = described["tokenizer"]
        self.vocab_size: int = described["vocab_size"]
        self.max_length: int = described["max_length"]
        self.max_request_tokens: int = described["max_request_tokens"]
        self.device: str = described["device"]
        self.dtype: str = described["dtype"]
        self.engine = SimpleNamespace(name=described["engine"])
        self.adapter: str | None = described["adapter"]
        self.nbytes: int = described["nbytes"]
        self.max_batch_tokens: int = described["max_batch_tokens"]
        self._parameters = described["num_parameters"]
        self._scored = described["num_scored_parameters"]

    def num_parameters(self) -> int:
        return self._parameters

    def num_scored_parameters(self) -> int:
        return self._scored
