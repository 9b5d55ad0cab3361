"""The signals compared, each oriented so that higher means "the model prefers this completion".

Values come from the server's answer as recorded in the cache (`scores`, `num_tokens`, and the
extra `signals` requested), so a report can be rebuilt from the cache alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The extra signals asked of the server (names from vigor_client.schema.SignalName).
SERVER_SIGNALS = (
    "self_certainty", "entropy_mean", "logprob_mean", "logprob_sum", "prob_mean"
)  # fmt: skip


@dataclass(frozen=True)
class Signal:
    name: str
    label: str  # for tables and plots
    field: str  # "score", "num_tokens", or a server signal name
    sign: float  # +1: higher is preferred as returned; -1: lower is preferred


SIGNALS = (
    Signal("vigor", "VIGOR score", "score", +1.0),
    Signal("self_certainty", "self-certainty", "self_certainty", +1.0),
    Signal("neg_entropy", "−entropy", "entropy_mean", -1.0),
    Signal("logprob_mean", "mean log-prob", "logprob_mean", +1.0),
    Signal("logprob_sum", "sum log-prob", "logprob_sum", +1.0),
    # The baseline a signal has to beat: longer completions preferred (1 − AUROC for shorter).
    Signal("length", "length (tokens)", "num_tokens", +1.0),
)
SIGNAL_NAMES = tuple(s.name for s in SIGNALS)


def signal_values(record: dict[str, Any], signal: Signal) -> list[float | None]:
    """One scored group's values for `signal`, oriented; None where the server gave none."""
    if signal.field == "score":
        raw = record["scores"]
    elif signal.field == "num_tokens":
        raw = record["num_tokens"]
    else:
        raw = record["signals"][signal.field]
    return [None if v is None else signal.sign * float(v) for v in raw]
