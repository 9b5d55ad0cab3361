"""Measured memory of a batched micro-batch: peak tensor bytes per token, head chunked or not.

Method: one real pass of the engine on a probe row runs under torch's profiler with
`profile_memory=True`; its allocator events (every allocation and free, with its size, on the
model's device) are replayed in order and the highest running total is the pass's peak above
where it started. That counts everything the pass holds at its worst moment: what autograd
saves, what the norm hooks keep (inputs, Grams), the logits or head chunks, and the transient
buffers of the backward. It is the same on CPU and CUDA, and needs no allocator statistics
(CPU has none) and no RSS (which glibc's caching blurs).

Three probes of one row of PROBE_TOKENS tokens each: the head chunked, whose peak / tokens is
`bytes_per_token` (it includes the chunked head's fixed buffers, spread over the probe's
tokens: an upper bound for larger micro-batches); and the head unchunked twice, with a long and
a short completion of the same total length, whose peak difference over the completion-length
difference is `logit_bytes_per_token` (the vocabulary-sized buffers one completion position
adds: logits, their gradient, the head's output gradient as the norm rule reads it). Measured
once per model configuration, dtype, device, scored-parameter count and checkpointing, and
cached for the process; three passes of 128 tokens cost a few seconds on two CPU cores. On the
default model (CPU, float32) the chunked figure is 1.05–1.10 MiB per token from 64 to 500
tokens and 1.2 at 1,224 (attention's share grows with length): the linear model is a slight
underestimate for single long rows, which the loop's cap (its own real peak is ~1.9 MiB per
token) absorbs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

# Tokens of the probe row (prompt PROBE_PROMPT + completion), at most the model's context.
PROBE_TOKENS = 128


@dataclass(frozen=True)
class Footprint:
    """What one token costs a batched micro-batch at its peak, in bytes."""

    bytes_per_token: int  # chunked head: activations, hook captures, backward buffers
    logit_bytes_per_token: int  # added per completion position when the head is not chunked
    probe_tokens: int  # the probe row's length (0: not measured, estimated from the config)

    @property
    def measured(self) -> bool:
        return self.probe_tokens > 0


_cache: dict[tuple, Footprint] = {}
_lock = threading.Lock()


def footprint_key(model: nn.Module, scored: int, checkpointing: bool) -> tuple:
    first = next(model.parameters())
    config = getattr(model, "config", None)
    shape = config.to_json_string(use_diff=False) if config is not None else repr(model)
    return (type(model), shape, first.dtype, str(first.device), scored, checkpointing)


def cached_footprint(key: tuple, measure: Callable[[], Footprint]) -> Footprint:
    with _lock:
        found = _cache.get(key)
    if found is None:
        found = measure()
        if found.measured:  # an estimate is tried again next time
            with _lock:
                _cache[key] = found
    return found


def peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Highest total of tensor bytes allocated on `device` while `run()` ran, above its start."""
    from torch.profiler import ProfilerActivity, profile

    enabled = getattr(torch._C._autograd, "_profiler_enabled", lambda: False)
    if enabled():
        # A second profiler would silently end the caller's session: measure nothing instead.
        raise RuntimeError("a torch profiler is already running in this process")
    # The CPU activity alone carries the allocator events of every device (CUDA's caching
    # allocator reports to the same hook); it needs no CUPTI. Not yet run on a GPU here.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    # The chrome trace is the public form of the allocator events (kineto keeps them private).
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.unlink(path)
    kind = 1 if device.type == "cuda" else 0
    index = device.index if device.index is not None else 0
    mine = [
        e
        for e in events
        if e.get("name") == "[memory]"
        and e["args"].get("Device Type") == kind
        and (kind == 0 or e["args"].get("Device Id") == index)
    ]
    mine.sort(key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0)))
    total = top = 0
    for e in mine:
        total += e["args"]["Bytes"]
        top = max(top, total)
    return top


def estimated(model: nn.Module) -> Footprint:
    """The config formula of serving/token_budget.py, when the profiler cannot measure."""
    from ..serving.token_budget import per_token_bytes

    vocab = model.get_input_embeddings().num_embeddings
    size = next(model.parameters()).element_size()
    return Footprint(per_token_bytes(model), 3 * vocab * size, 0)


def measure(model: nn.Module, probe: Callable[[int, int, bool], object], context: int) -> Footprint:
    """Run `probe(prompt, completion, chunked)` three times and read the peaks."""
    device = next(model.parameters()).device
    tokens = max(4, min(PROBE_TOKENS, context))
    long_span, short_span = tokens - max(1, tokens // 8), tokens // 2
    try:
        chunked = peak_bytes(lambda: probe(tokens - long_span, long_span, True), device)
        long = peak_bytes(lambda: probe(tokens - long_span, long_span, False), device)
        short = peak_bytes(lambda: probe(tokens - short_span, short_span, False), device)
    except Exception as exc:  # e.g. the profiler is already running in this process
        log.warning(
            "micro-batch memory not measured (%s: %s); using the config estimate",
            type(exc).__name__, exc,
        )  # fmt: skip
        return estimated(model)
    found = Footprint(
        bytes_per_token=max(1, -(-chunked // tokens)),
        logit_bytes_per_token=max(0, -(-(long - short) // (long_span - short_span))),
        probe_tokens=tokens,
    )
    log.info(
        "micro-batch memory measured on %d-token rows: %.3f MiB per token, %.3f MiB more per "
        "completion token with the lm_head unchunked",
        tokens, found.bytes_per_token / 2**20, found.logit_bytes_per_token / 2**20,
    )  # fmt: skip
    return found
