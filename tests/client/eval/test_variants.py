"""`vigor-eval --variants`: grouped folds, the fitted combination, the recommendation rule, and
the fitted specs served back by a real server giving exactly the pairs the report claimed."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from vigor_client.client import VigorClient
from vigor_client.eval import parse_groups
from vigor_client.eval.cli import main
from vigor_client.eval.fit import FEATURES, fit_pairwise_logistic, pair_differences
from vigor_client.eval.metrics import count_pairs, pooled_auroc
from vigor_client.eval.report import build_report
from vigor_client.eval.runner import evaluate
from vigor_client.eval.variants import assign_folds, check_served, evaluate_variants, spec_values
from vigor_client.schema import RewardSpec
from vigor_service.app import create_app
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ...servers import ThreadServer
from ...tiny_models import TINY_MODELS, VOCAB

SIGNALS = ("self_certainty", "entropy_mean", "logprob_mean", "logprob_sum", "prob_mean")


def test_pairwise_logistic_recovers_the_direction_that_orders_pairs():
    rng = np.random.default_rng(0)
    true_w = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    rows = []
    for _ in range(60):
        feats = rng.normal(size=(4, len(FEATURES))) * [100, 1, 5, 1, 0.1, 50]
        utility = (feats / [100, 1, 5, 1, 0.1, 50]) @ true_w + rng.normal(scale=0.3, size=4)
        labels = [float(u > np.median(utility)) for u in utility]
        rows.append((feats.tolist(), labels))
    scale = np.array([100, 1, 5, 1, 0.1, 50.0])
    w = fit_pairwise_logistic(pair_differences(rows), scale, l2=0.1) * scale
    assert np.corrcoef(w, true_w)[0, 1] > 0.95
    assert w[0] > 0 and w[1] < 0


def test_folds_hold_whole_groups_and_are_reproducible():
    keys = [f"k{i}" for i in range(23)]
    a, b = assign_folds(keys, 5, seed=3), assign_folds(list(reversed(keys)), 5, seed=3)
    assert a == b and set(a.values()) == set(range(5))
    assert sorted(list(a.values()).count(f) for f in range(5)) == [4, 4, 5, 5, 5]


def test_a_combination_that_beats_every_single_signal_is_recommended():
    # labels follow entropy and self-certainty together, which no single signal does alone
    data, records = _records_per_group(40, 1)
    header = {"temperature": 1.0, "model": "synthetic", "weight_version": 0}
    report = build_report(data, records, header, bootstrap=300, seed=0)
    section = evaluate_variants(
        data, records, header, report["signals"], folds=4, bootstrap=300, seed=0
    )
    combo = section["candidates"]["combination"]
    assert combo["clears_best_single"] and combo["minus_best_single_ci"][0] > 0
    assert section["recommended"] == "combination"
    spec = RewardSpec.model_validate(section["recommended_spec"])
    assert spec.weights["entropy_mean"] < 0 < spec.weights["self_certainty"]
    assert spec.about["heldout_auroc"] == combo["auroc"]
    # held-out AUROC is the pooled pairs of each fold's own spec on its own groups
    held = []
    for g in data.groups:
        f = section["fold_of_line"][str(g.line)]
        fold_spec = RewardSpec.model_validate(combo["fold_specs"][str(f)])
        held.append(count_pairs(spec_values(fold_spec, records[g.key]), g.labels))
    assert pooled_auroc(held) == combo["auroc"]


def test_nothing_is_recommended_when_labels_are_noise():
    data, records = _records_per_group(30, 2, noise=True)
    header = {"temperature": 1.0}
    report = build_report(data, records, header, bootstrap=300, seed=0)
    section = evaluate_variants(
        data, records, header, report["signals"], folds=3, bootstrap=300, seed=0
    )
    assert section["recommended"] is None and "clears the best single" in section["why_none"]
    assert "recommended_spec" not in section


def test_variants_refused_for_signals_at_another_temperature():
    data, records = _records_per_group(10, 3)
    report = build_report(data, records, {"temperature": 0.7}, bootstrap=10, seed=0)
    section = evaluate_variants(
        data, records, {"temperature": 0.7}, report["signals"], folds=3, bootstrap=10, seed=0
    )
    assert "temperature 0.7" in section["refused"]


def _records_per_group(n: int, seed: int, noise: bool = False):
    """Distinct groups (distinct prompts), each its own record; labels from entropy and
    self-certainty together (or coin flips)."""
    rng = random.Random(seed)
    lines, recs = [], []
    for i in range(n):
        rec = {"scores": [], "num_tokens": [], "reasons": [], "signals": {s: [] for s in SIGNALS}}
        rows = []
        for _ in range(4):
            v = {
                "vigor": rng.gauss(-50, 10), "entropy_mean": rng.uniform(0.5, 3),
                "self_certainty": rng.uniform(5, 12), "logprob_mean": rng.uniform(-3, -0.5),
                "prob_mean": rng.uniform(0.2, 0.8), "num_tokens": rng.randint(20, 80),
            }  # fmt: skip
            rows.append(v)
        util = [
            rng.random() if noise else -v["entropy_mean"] / 2.5 + v["self_certainty"] / 7
            for v in rows
        ]
        cut = sorted(util)[1]
        comps = []
        for v, u in zip(rows, util, strict=True):
            comps.append({"ids": [1, 2, 3], "correct": u > cut})
            rec["scores"].append(v["vigor"])
            rec["num_tokens"].append(v["num_tokens"])
            rec["reasons"].append(None)
            for s in SIGNALS:
                rec["signals"][s].append(
                    v["logprob_mean"] * v["num_tokens"] if s == "logprob_sum" else v[s]
                )
        lines.append(json.dumps({"prompt_ids": [i + 1, 7], "completions": comps}))
        recs.append(rec)
    data = parse_groups(lines)
    return data, {g.key: {"key": g.key, **r} for g, r in zip(data.groups, recs, strict=True)}


# --- a real server: the fitted specs served back ------------------------------------------
def labelled_groups(n: int, seed: int) -> list[str]:
    """Groups of random token ids; a completion is 'correct' when its ids are mostly low (a
    property the tiny model's signals see only partly), each group holding both labels."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        comps = []
        for j in range(4):
            length = rng.randint(2, 7)
            low = j < 2
            ids = [
                rng.randrange(0, VOCAB // 2)
                if (low or rng.random() < 0.3)
                else rng.randrange(VOCAB // 2, VOCAB)
                for _ in range(length)
            ]
            comps.append({"ids": ids, "correct": low})
        prompt = [rng.randrange(VOCAB) for _ in range(rng.randint(2, 5))]
        lines.append(json.dumps({"id": f"s{i}", "prompt_ids": prompt, "completions": comps}))
    return lines


@pytest.mark.slow
def test_specs_served_back_give_the_held_out_pairs_the_report_claims(tmp_path):
    model = TINY_MODELS["llama-untied"](dtype=torch.float64)
    loaded = LoadedModel(name="tiny", path=None, model=model, tokenizer=None)
    data_path = tmp_path / "groups.jsonl"
    data_path.write_text("\n".join(labelled_groups(15, seed=5)) + "\n")
    app = create_app(Settings(max_batch_tokens=256), loaded=loaded)
    with ThreadServer(app) as server, VigorClient(server.url) as client:
        data = parse_groups(data_path.read_text().splitlines(), str(data_path))
        report = evaluate(
            data, client, scores_path=tmp_path / "s.jsonl", bootstrap=200, folds=3,
            progress=False,
        )  # fmt: skip
        section = report["variants"]
        for cand in ("combination", "focal_tuned"):
            check = check_served(client, data, section, cand, range(3))
            assert check["equal"], check
            assert check["served_auroc"] == section["candidates"][cand]["auroc"]
            for f in range(3):
                assert (
                    check["folds"][str(f)]["served_spec"]
                    == (section["candidates"][cand]["fold_specs"][str(f)]["name"])
                )
        # the CLI, against the same server and scores: the spec is written only if it clears
        out = tmp_path / "spec.json"
        code = main([
            str(data_path), "--url", server.url, "--scores", str(tmp_path / "s.jsonl"),
            "--resume", "--variants", "--folds", "3", "--bootstrap", "200", "--spec",
            str(out), "--no-progress", "--check-served", "combination",
        ])  # fmt: skip
    if section["recommended"] is None:
        assert code == 3 and not out.exists()
    else:
        assert code == 0
        assert json.loads(out.read_text()) == section["recommended_spec"]
    # the spec fitted on all groups, loaded by a server from its file (--reward-spec) and named
    # by a request, scores every group as vigor-eval computed it from the recorded signals
    spec = section["candidates"]["combination"]["spec"]
    spec_path = tmp_path / "combination.json"
    spec_path.write_text(json.dumps(spec))
    records = {}
    for line in (tmp_path / "s.jsonl").read_text().splitlines()[1:]:
        rec = json.loads(line)
        records[rec["key"]] = rec
    app = create_app(Settings(max_batch_tokens=256, reward_spec=str(spec_path)), loaded=loaded)
    with ThreadServer(app) as server, VigorClient(server.url) as client:
        assert client.model_info().reward_spec.name == spec["name"]
        res = client.score([g.request() for g in data.groups], reward_spec=spec["name"])
    parsed = RewardSpec.model_validate(spec)
    assert res.reward_spec == parsed
    for g, got in zip(data.groups, res.groups, strict=True):
        assert got.scores == pytest.approx(spec_values(parsed, records[g.key]), rel=1e-9)
