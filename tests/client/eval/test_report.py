"""A hand-made set of groups whose AUROC, ties and interval are worked out by hand below.

The records are what the server answers for a group (scores, num_tokens, reasons, signals),
written out so the expected figures can be checked with pencil and paper.
"""

import json

import pytest

from vigor_client.eval import build_report, format_table, parse_groups
from vigor_client.eval.signals import SERVER_SIGNALS, SIGNAL_NAMES


def group(prompt, labels, kind="correct"):
    comps = [{"text": f"c{i}", kind: lab} for i, lab in enumerate(labels)]
    return json.dumps({"prompt": prompt, "completions": comps})


def record(g, scores, num_tokens, reasons=None, **signals):
    n = len(scores)
    base = {s: [0.0] * n for s in SERVER_SIGNALS}
    return {
        "key": g.key,
        "line": g.line,
        "id": g.id,
        "weight_version": 0,
        "scores": scores,
        "num_tokens": num_tokens,
        "reasons": reasons or [None] * n,
        "signals": {**base, **signals},
    }


HEADER = {"model": "hand", "weight_version": 0, "temperature": 1.0}


@pytest.fixture
def hand_set():
    data = parse_groups(
        [
            group("A", [True, True, False]),
            group("B", [True, False, False]),
            group("C", [True, True]),  # one label only: no pair
            json.dumps({"prompt": "D", "completions": []}),  # empty
        ]
    )
    a, b, _, _ = data.groups
    records = {
        # vigor A: pairs (0,2) -1 > -2 win, (1,2) -3 < -2 loss        -> 1/2
        # vigor B: pairs (0,1) -5 = -5 tie, (0,2) -5 > -9 win          -> 1.5/2
        a.key: record(
            a,
            [-1.0, -3.0, -2.0],
            [5, 5, 5],
            self_certainty=[2.0, 1.0, 0.0],
            entropy_mean=[1.0, 1.0, 2.0],
        ),
        b.key: record(
            b,
            [-5.0, -5.0, -9.0],
            [3, 4, 3],
            self_certainty=[0.0, 1.0, 2.0],
            entropy_mean=[1.0, 1.0, 1.0],
        ),
    }
    return data, records


def test_auroc_ties_and_interval_by_hand(hand_set):
    data, records = hand_set
    report = build_report(data, records, HEADER, bootstrap=2000, seed=0)
    s = report["signals"]
    assert list(s) == list(SIGNAL_NAMES)
    # pooled (1 + 1.5) / 4; two groups of 2 pairs: interval [A, B] (see test_metrics)
    assert (s["vigor"]["auroc"], s["vigor"]["wins"], s["vigor"]["ties"], s["vigor"]["pairs"]) == (
        0.625,
        2,
        1,
        4,
    )
    assert s["vigor"]["ci"] == [0.5, 0.75]
    # self-certainty: A wins both, B loses both -> 0.5 pooled, interval [0, 1]
    assert (s["self_certainty"]["auroc"], s["self_certainty"]["ci"]) == (0.5, [0.0, 1.0])
    # -entropy: A [-1,-1,-2] wins both; B all equal, 2 ties -> (2 + 1) / 4
    assert (s["neg_entropy"]["auroc"], s["neg_entropy"]["ties"]) == (0.75, 2)
    assert s["neg_entropy"]["ci"] == [0.5, 1.0]
    # length: A all 5 (2 ties); B (3 vs 4) loss, (3 vs 3) tie -> (0 + 1.5) / 4
    assert (s["length"]["auroc"], s["length"]["ties"], s["length"]["ci"]) == (0.375, 3, [0.25, 0.5])
    # all-zero log-probs: every pair a tie
    assert s["logprob_sum"]["auroc"] == 0.5 and s["logprob_sum"]["ties"] == 4
    assert all(v["spearman"] is None for v in s.values())
    g = report["groups"]
    assert (g["in_file"], g["scored"], g["empty"], g["one_label"]) == (4, 2, 1, 1)
    assert (g["lines_one_label"], g["lines_empty"]) == ([3], [4])
    rows = {r["line"]: r for r in report["per_group"]}
    assert rows[1]["auroc"]["vigor"] == 0.5 and rows[2]["auroc"]["vigor"] == 0.75
    assert rows[1]["positives"] == 2
    json.dumps(report)  # JSON-ready as is


def test_null_values_join_no_pair_and_are_reported(hand_set):
    data, records = hand_set
    b = data.groups[1]
    records[b.key]["scores"] = [None, -5.0, -9.0]
    records[b.key]["reasons"] = ["empty_completion", None, None]
    report = build_report(data, records, HEADER, bootstrap=200)
    v = report["signals"]["vigor"]
    assert v["pairs"] == 2 and v["groups_with_pairs"] == 1 and v["lines_without_pair"] == [2]
    assert v["null_values"] == {"empty_completion": 1}
    assert report["signals"]["length"]["pairs"] == 4  # other signals keep their pairs
    table = format_table(report)
    assert "vigor: no usable pair in lines 2" in table
    assert "vigor: completions without a value: 1 empty_completion" in table


def test_numeric_labels_add_spearman_by_hand():
    data = parse_groups(
        [
            group("A", [3, 2, 1], "score"),
            group("B", [1, 2, 3], "score"),
            group("C", [1, 2], "score"),
        ]
    )
    a, b, c = data.groups
    records = {
        a.key: record(a, [30.0, 20.0, 10.0], [1, 2, 3]),  # rho 1, AUROC 3/3
        b.key: record(b, [5.0, 5.0, 6.0], [1, 1, 1]),  # rho 1.5/sqrt(3), AUROC 2.5/3
        c.key: record(c, [4.0, 4.0], [2, 2]),  # constant signal: no rho, AUROC 1/2
    }
    report = build_report(data, records, HEADER, bootstrap=500)
    v = report["signals"]["vigor"]
    assert v["auroc"] == pytest.approx((3 + 2.5 + 0.5) / 7)
    rho = v["spearman"]
    assert rho["groups"] == 2 and rho["mean"] == pytest.approx((1 + 1.5 / 3**0.5) / 2)
    assert rho["ci"] == pytest.approx([1.5 / 3**0.5, 1.0])
    assert report["per_group"][2]["spearman"]["vigor"] is None
    assert "Spearman" in format_table(report)


def test_table_reads_and_missing_groups_are_counted(hand_set):
    data, records = hand_set
    del records[data.groups[1].key]
    report = build_report(data, records, HEADER, bootstrap=100)
    assert report["groups"]["not_scored"] == 1 and report["groups"]["lines_not_scored"] == [2]
    table = format_table(report)
    assert "4 in file, 1 scored; 1 empty, 1 with one label only" in table
    assert "1 not scored yet" in table and "one label only: lines 3" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    assert rows["vigor"][:2] == ["vigor", "0.500"] and rows["length"][1] == "0.500"


def test_interval_reproduces_with_its_seed(hand_set):
    data, records = hand_set
    one = build_report(data, records, HEADER, bootstrap=300, seed=5)
    assert build_report(data, records, HEADER, bootstrap=300, seed=5) == one
    assert one["bootstrap"] == {"samples": 300, "seed": 5, "level": 0.95, "unit": "group"}
