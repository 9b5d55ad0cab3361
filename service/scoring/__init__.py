"""The scoring path, in the order a request takes it.

limits.py    size limits, checked first
inputs.py    groups → token sequences (tokenizer, chat template, vocabulary, length)
scheduler.py coalescing requests into engine calls on the worker, backpressure, deadlines
response.py  engine results → VIGOR scores, shaped rewards and signals per group
shaping.py   rank shaping within a group
openrlhf.py  OpenRLHF's /get_reward protocol mapped onto groups and back
pipeline.py  ScoringPipeline: the one path from a validated request to its response
"""

from .pipeline import ScoringPipeline

__all__ = ["ScoringPipeline"]
