"""`vigor-eval`: does the intrinsic reward agree with your labels, on your model and data?

    from vigor_client.eval import evaluate, format_table
    report = evaluate("groups.jsonl", "http://127.0.0.1:8000", scores_path="groups.scores.jsonl")
    print(format_table(report))

Pieces: `data` (input checks), `scoring` + `cache` (resumable scoring through `VigorClient`),
`metrics` (pure-Python AUROC, Spearman, bootstrap), `report`, `plot` (needs matplotlib).
"""

from .cache import CacheError, ScoreCache
from .data import EvalGroup, EvalSet, InputError, load_groups, parse_groups
from .metrics import PairCount, bootstrap_interval, count_pairs, pooled_auroc, spearman
from .report import build_report, format_table
from .runner import default_scores_path, evaluate
from .scoring import ScoringError, score_groups
from .signals import SIGNAL_NAMES, SIGNALS

__all__ = [
    "SIGNALS",
    "SIGNAL_NAMES",
    "CacheError",
    "EvalGroup",
    "EvalSet",
    "InputError",
    "PairCount",
    "ScoreCache",
    "ScoringError",
    "bootstrap_interval",
    "build_report",
    "count_pairs",
    "default_scores_path",
    "evaluate",
    "format_table",
    "load_groups",
    "parse_groups",
    "pooled_auroc",
    "score_groups",
    "spearman",
]
