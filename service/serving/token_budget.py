"""Default token limits on CPU, from the machine's memory and the model's cost per token.

Scoring one sequence keeps every layer's activations (and their gradients) for all its tokens
alive at once, so a long sequence's peak memory grows linearly with its length. On the default
model (float32, 30 layers, hidden 576, MLP 1536, vocabulary 49,152) one sequence of 1024 / 2048
/ 3072 tokens peaked at 2.7 / 4.7 / 6.6 GB RSS: ~1.9 MiB per token. `per_token_bytes` is that
measurement written in terms of the config, so it scales to other models:

    dtype bytes × (layers × (10 × hidden + 4 × intermediate) + 3 × vocabulary)

(per layer: residual stream, norms, q/k/v, attention output and their gradients ≈ 10 × hidden;
the MLP's gate, up, activation and product ≈ 4 × intermediate; the logits, their log-softmax and
its gradient ≈ 3 × vocabulary), which gives 1.92 MiB per token on the default model.

A sequence may use `MEMORY_SHARE` of the machine's memory less the weights and their gradients;
a request may hold `SEQUENCES_PER_REQUEST` times what memory affords one sequence (a group of 8
maximal completions; a short context does not lower it), at most the CUDA default. Micro-batches
are bounded by max_batch_tokens, so the request bound is a
bound on engine time more than on memory. On CUDA the limits stay the model's context and
MAX_REQUEST_TOKENS: device memory is probed by the out-of-memory split instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

MEMORY_SHARE = 0.5
SEQUENCES_PER_REQUEST = 8
MAX_REQUEST_TOKENS = 65536  # the default everywhere else (CUDA)
MIN_SEQUENCE_TOKENS = 256  # below this the machine cannot serve the model usefully anyway


@dataclass(frozen=True)
class TokenBudget:
    max_sequence_tokens: int
    max_request_tokens: int
    memory_bytes: int
    per_token_bytes: int


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when a container sets a lower one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def _config_int(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def per_token_bytes(model: torch.nn.Module) -> int:
    """Peak bytes one more token of a sequence costs when it is scored (see the module doc)."""
    config = model.config
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model")
    layers = _config_int(config, "num_hidden_layers", "n_layer", "num_layers")
    inner = _config_int(config, "intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    vocab = model.get_input_embeddings().num_embeddings
    dtype_bytes = next(model.parameters()).element_size()
    return dtype_bytes * (layers * (10 * hidden + 4 * inner) + 3 * vocab)


def cpu_token_budget(
    model: torch.nn.Module, context: int, memory_bytes: int | None = None
) -> TokenBudget:
    memory = machine_memory_bytes() if memory_bytes is None else memory_bytes
    per_token = per_token_bytes(model)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    free = int(MEMORY_SHARE * memory) - 2 * weights  # the weights and their gradients
    affordable = max(MIN_SEQUENCE_TOKENS, free // per_token)
    sequence = min(context, affordable)
    # From what memory affords, not from the context: a short-context model still takes a group
    # of many sequences per request (micro-batches bound the memory, this bounds engine time).
    request = min(MAX_REQUEST_TOKENS, SEQUENCES_PER_REQUEST * affordable)
    return TokenBudget(sequence, request, memory, per_token)
