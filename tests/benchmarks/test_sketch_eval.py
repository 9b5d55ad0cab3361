"""sketch_eval.py's summary: pair agreement, flips and AUROC from part files, checked by hand.

The merge is what the committed results table comes from, so its counting is pinned on groups
small enough to count on paper."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sketch_eval

# Two groups: norms of 3 and 2 completions (score −‖g‖·√T, all T = 1 here: larger norm, lower).
EXACT = [1.0, 2.0, 3.0, 5.0, 4.0]
LABELS = [[1.0, 0.0, 0.0], [0.0, 1.0]]


def _part(name: str, norms: list[float]) -> dict:
    return {
        "sizes": [3, 2],
        "labels": LABELS,
        "num_tokens": [1] * 5,
        "norms": {name: {"norms": norms, "wall_s": 1.0, "cpu_s": 1.0}},
    }


def test_agreement_counts_pairs_in_the_same_strict_order():
    # Group 1 swaps its first two (1 of 3 pairs); a tie where exact has none is a disagreement.
    assert sketch_eval.agreement([[2.0, 1.0, 3.0], [4.0, 4.0]], [[1.0, 2.0, 3.0], [5.0, 4.0]]) == (
        pytest.approx(2 / 4)
    )


def test_summary_of_merged_parts():
    parts = [_part("exact", EXACT), _part("k=32", [2.0, 1.0, 3.0, 5.0, 4.0])]
    summary = sketch_eval.summarize(parts)
    assert (summary["groups"], summary["sequences"], summary["pairs"]) == (2, 5, 4)
    exact, sketch = summary["rows"]["exact"], summary["rows"]["k=32"]
    assert exact["agree"] == 1.0 and sketch["agree"] == pytest.approx(3 / 4)
    # Three labelled pairs: group 1's correct completion (norm 1) against the two others, group
    # 2's (norm 4) against norm 5. Exact wins all three; the sketch loses one in group 1.
    assert exact["auroc"] == 1.0 and sketch["auroc"] == pytest.approx(2 / 3)
    assert sketch["median_rel_err"] == 0.0  # sorted relative errors 0, 0, 0, 0.5, 1
    lo, hi = sketch["auroc_95"]
    assert lo <= sketch["auroc"] <= hi
    text = sketch_eval.report(summary, [], _Args(), "2026-12-06 00:00", (0.0, 0.0, 0.0), merged=2)
    assert "| sketch k=32 | 0.750 | 1 | 0.667 |" in text
    assert "Merged from 2 part files" in text


def test_parts_of_different_groups_are_refused():
    other = _part("k=32", [1.0, 2.0, 3.0, 5.0, 4.0])
    other["num_tokens"] = [2] * 5
    with pytest.raises(SystemExit, match="different groups"):
        sketch_eval.summarize([_part("exact", EXACT), other])


def test_the_committed_parts_merge():
    """The results table's part files still load and summarize under today's code."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "sketch_eval_cpu"
    parts = [json.loads(p.read_text()) for p in sorted(folder.glob("r_*.json"))]
    summary = sketch_eval.summarize(parts)
    assert summary["pairs"] == 360 and summary["rows"]["exact"]["agree"] == 1.0


class _Args:
    max_batch_tokens = 1024
    speed_ks = ()
