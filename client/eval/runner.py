"""`evaluate`: load, score what is missing, report — the command's whole job as one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..client import VigorClient
from .cache import ScoreCache
from .data import EvalSet, load_groups
from .report import DEFAULT_BOOTSTRAP, build_report
from .scoring import pending, score_groups
from .variants import evaluate_variants


def default_scores_path(data_path: str | Path) -> Path:
    """Beside the working directory, not the input (which may be read-only or shipped)."""
    return Path(f"{Path(data_path).stem}.scores.jsonl")


def evaluate(
    data: str | Path | EvalSet,
    client: VigorClient | str = "http://127.0.0.1:8000",
    *,
    scores_path: str | Path | None = None,
    resume: bool = False,
    groups_per_request: int = 8,
    temperature: float = 1.0,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    progress: bool = True,
    folds: int | None = None,
) -> dict[str, Any]:
    """Score `data` (a JSONL path or a loaded `EvalSet`) on the server and return the report.

    Scores are appended to `scores_path` as they arrive; `resume=True` continues an existing
    file, skipping the groups it holds (and needs no server when it holds them all).
    `folds`: also compare the reward variants on that many held-out folds (report "variants").
    """
    data = data if isinstance(data, EvalSet) else load_groups(data)
    scores_path = scores_path or default_scores_path(data.path)
    with ScoreCache.open(scores_path, resume=resume) as cache:
        cache.drop_corrupt()
        if pending(data.groups, cache):
            own = isinstance(client, str)
            conn = VigorClient(client) if isinstance(client, str) else client
            try:
                score_groups(
                    conn,
                    data.groups,
                    cache,
                    groups_per_request=groups_per_request,
                    temperature=temperature,
                    progress=progress,
                )
            finally:
                if own:
                    conn.close()
        report = build_report(data, cache.records, cache.header, bootstrap=bootstrap, seed=seed)
        if cache.dropped:
            report["dropped_records"] = cache.dropped
        if cache.skipped:
            report["skipped"] = [cache.skipped[k] for k in sorted(cache.skipped)]
        if folds is not None:
            report["variants"] = evaluate_variants(
                data, cache.records, cache.header, report["signals"], folds=folds,
                bootstrap=bootstrap, seed=seed,
            )  # fmt: skip
        return report
