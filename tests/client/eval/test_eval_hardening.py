"""vigor-eval's bad inputs (issue 26, item 11): a non-UTF-8 file is one clear message, a corrupt
resume record is never used (its group is scored again), and a group larger than the server
accepts is split into parts of its completions (exact for raw scores) or skipped with why."""

from __future__ import annotations

import json
import random

import pytest
import torch

from vigor_client.eval.cli import main
from vigor_service.app import create_app
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ...servers import ThreadServer
from ...tiny_models import TINY_MODELS, VOCAB


def groups_file(path, sizes, lengths=(2, 6), seed=0):
    rng = random.Random(seed)
    lines = []
    for i, n in enumerate(sizes):
        comps = [
            {
                "ids": [rng.randrange(VOCAB) for _ in range(rng.randint(*lengths))],
                "correct": j % 2 == 0,
            }
            for j in range(n)
        ]
        lines.append(json.dumps({"id": i, "prompt_ids": [1 + i, 2, 3], "completions": comps}))
    path.write_text("\n".join(lines) + "\n")
    return path


def serve(**settings):
    model = TINY_MODELS["llama-untied"](dtype=torch.float64)
    loaded = LoadedModel(name="tiny", path=None, model=model, tokenizer=None)
    return ThreadServer(create_app(Settings(**settings), loaded=loaded))


def run(capsys, *argv):
    code = main([*map(str, argv), "--no-progress", "--bootstrap", "50"])
    return code, capsys.readouterr()


def test_non_utf8_data_file_is_one_message(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "caf\u00e9", "completions": []}\n'.encode("latin-1"))
    code, out = run(capsys, path, "--url", "http://127.0.0.1:9")
    assert code == 2
    assert "not UTF-8" in out.err and "0xe9" in out.err and "Traceback" not in out.err


def test_non_utf8_scores_file_is_one_message(tmp_path, capsys):
    data = groups_file(tmp_path / "g.jsonl", [2])
    scores = tmp_path / "s.jsonl"
    scores.write_bytes(b"\xff\xfe{}\n")
    code, out = run(capsys, data, "--url", "http://127.0.0.1:9", "--scores", scores, "--resume")
    assert code == 1
    assert "not UTF-8" in out.err and str(scores) in out.err and "Traceback" not in out.err


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("scores", 1e9, "outside what the server computes"),
        ("scores", "NaN", "not a finite number"),
        ("num_tokens", -3, "non-negative integers"),
        ("prob_mean", 1.5, "outside what the server computes"),
        ("scores", "short", "one per completion"),
    ],
)
def test_corrupt_resume_records_are_rescored_not_used(tmp_path, capsys, field, value, why):
    data = groups_file(tmp_path / "g.jsonl", [3, 2, 4])
    scores = tmp_path / "s.jsonl"
    with serve() as server:
        assert (
            run(
                capsys, data, "--url", server.url, "--scores", scores, "--json", tmp_path / "a.json"
            )[0]
            == 0
        )
        lines = scores.read_text().splitlines()
        good = json.loads(lines[2])
        bad = json.loads(lines[2])
        if field == "prob_mean":
            bad["signals"]["prob_mean"][0] = value
        elif value == "short":
            bad["scores"] = bad["scores"][:-1]
        elif field == "num_tokens":
            bad["num_tokens"][0] = value
        else:
            bad[field][0] = float(value)
        lines[2] = json.dumps(bad)
        scores.write_text("\n".join(lines) + "\n")
        code, out = run(
            capsys,
            data,
            "--url",
            server.url,
            "--scores",
            scores,
            "--resume",
            "--json",
            tmp_path / "b.json",
        )
    assert code == 0
    assert f"{scores} line 3: " in out.err and why in out.err and "scored again" in out.err
    rescored = json.loads(scores.read_text().splitlines()[-1])
    assert rescored["key"] == good["key"] and rescored["scores"] == good["scores"]
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert first["signals"] == second["signals"]


def test_an_over_large_group_is_split_exactly_or_skipped_with_its_reason(tmp_path, capsys):
    data = groups_file(tmp_path / "g.jsonl", [5, 2, 3], lengths=(2, 5))
    with serve() as whole:
        assert run(capsys, data, "--url", whole.url, "--scores", tmp_path / "w.jsonl")[0] == 0
    # at most 2 completions a group: the 5- and 3-completion groups go in parts
    with serve(max_completions_per_group=2) as small:
        code, out = run(capsys, data, "--url", small.url, "--scores", tmp_path / "p.jsonl")
    assert code == 0, out.err
    whole_recs = [json.loads(x) for x in (tmp_path / "w.jsonl").read_text().splitlines()[1:]]
    part_recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()[1:]]
    assert [r["key"] for r in part_recs] == [r["key"] for r in whole_recs]
    for w, p in zip(whole_recs, part_recs, strict=True):
        assert p["num_tokens"] == w["num_tokens"]
        assert p["scores"] == pytest.approx(w["scores"], rel=1e-9)
        for name, values in w["signals"].items():
            assert p["signals"][name] == pytest.approx(values, rel=1e-9)
    # one completion longer than a whole request may be: its group is skipped, the rest scored
    long = tmp_path / "long.jsonl"
    rows = data.read_text().splitlines()
    row = json.loads(rows[1])
    row["completions"][0]["ids"] = list(range(40))
    long.write_text("\n".join([rows[0], json.dumps(row), rows[2]]) + "\n")
    with serve(max_request_tokens=30) as tight:
        code, out = run(
            capsys, long, "--url", tight.url, "--scores", tmp_path / "l.jsonl", "--json", "-"
        )
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["groups"]["scored"] == 2 and report["groups"]["lines_not_scored"] == [2]
    assert len(report["skipped"]) == 1
    assert "line 2" in report["skipped"][0] and "completions[0] alone" in report["skipped"][0]
    assert "line 2" in out.err
