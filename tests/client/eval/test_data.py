"""Input checks: every bad line is reported with its line number and field, all at once."""

import json
from pathlib import Path

import pytest

from vigor_client.eval import InputError, load_groups, parse_groups

ROOT = Path(__file__).resolve().parents[3]
GOOD = {
    "prompt": "2+3=",
    "completions": [{"text": "5", "correct": True}, {"text": "6", "correct": False}],
}


def line(**changes) -> str:
    obj = {**GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


def problems(*lines: str) -> list[str]:
    with pytest.raises(InputError) as info:
        parse_groups(list(lines))
    return info.value.problems


def test_valid_forms_load_with_labels_and_status():
    data = parse_groups(
        [
            line(id="a"),
            "",
            line(
                prompt=...,
                messages=[{"role": "user", "content": "hi"}],
                completions=[
                    {"ids": [1, 2], "correct": True, "source": "x"},
                    {"ids": [], "correct": True},
                ],
            ),
            line(prompt=..., prompt_ids=[5, 6], completions=[]),
        ]
    )
    a, b, c = data.groups
    assert (a.line, b.line, c.line) == (1, 3, 4)  # blank lines keep the file's numbering
    assert a.labels == (1.0, 0.0) and a.status == "scorable" and a.form == "text"
    assert b.status == "one_label" and b.form == "ids" and b.completions == ([1, 2], [])
    assert c.status == "empty"
    assert data.label_kind == "correct"
    assert a.request() == {"id": 1, "prompt": "2+3=", "completions": ["5", "6"]}
    assert b.request()["completion_ids"] == [[1, 2], []]


def test_numeric_labels_and_key_ignores_labels():
    data = parse_groups(
        [line(completions=[{"text": "5", "score": 1}, {"text": "6", "score": 0.25}])]
    )
    assert data.label_kind == "score" and data.groups[0].labels == (1.0, 0.25)
    relabelled = parse_groups(
        [line(completions=[{"text": "5", "score": 0}, {"text": "6", "score": 1}])]
    )
    assert relabelled.groups[0].key == data.groups[0].key
    assert parse_groups([line(prompt="other")]).groups[0].key != data.groups[0].key


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "{not json",
            "line 1: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        ("[1, 2]", "line 1: expected a JSON object, got an array"),
        (line(id=True), "line 1: id: must be a string or an integer, got a boolean"),
        (line(prompt=...), 'line 1: needs one of "prompt", "messages", "prompt_ids"'),
        (line(messages=[]), 'line 1: gives "prompt" and "messages"; give exactly one'),
        (line(prompt=3), "line 1: prompt: must be a string, got a number (3)"),
        (line(prompt=..., messages=[]), "line 1: messages: must be a non-empty list"),
        (
            line(prompt=..., messages=[{"role": "user"}]),
            "line 1: messages[0].content: must be a string, got missing",
        ),
        (
            line(prompt=..., messages=[{"role": "user", "content": "x", "name": "n"}]),
            'line 1: messages[0]: unknown field "name"',
        ),
        (
            line(prompt=..., prompt_ids=[1, -2]),
            "line 1: prompt_ids[1]: must be a non-negative integer, got -2",
        ),
        (line(completions=...), 'line 1: needs "completions"'),
        (line(completions={"text": "5"}), "line 1: completions: must be a list, got an object"),
        (
            line(completions=["5"]),
            'line 1: completions[0]: must be an object like {"text": ..., "correct": true}',
        ),
        (line(completions=[{"correct": True}]), 'line 1: completions[0]: needs "text" or "ids"'),
        (
            line(completions=[{"text": "5", "ids": [1], "correct": True}]),
            'line 1: completions[0]: gives both "text" and "ids"',
        ),
        (
            line(completions=[{"text": 5, "correct": True}]),
            "line 1: completions[0].text: must be a string, got a number (5)",
        ),
        (
            line(completions=[{"ids": [1, 2.5], "correct": True}]),
            "line 1: completions[0].ids[1]: must be a non-negative integer, got 2.5",
        ),
        (
            line(
                completions=[
                    {"text": "5", "correct": True},
                    {"text": "6", "correct": True},
                    {"text": "7"},
                ]
            ),
            'line 1: completions[2]: needs "correct" or "score"',
        ),
        (
            line(completions=[{"text": "5", "correct": True, "score": 1}]),
            'line 1: completions[0]: gives both "correct" and "score"',
        ),
        (
            line(completions=[{"text": "5", "correct": 1}]),
            "line 1: completions[0].correct: must be true or false, got 1",
        ),
        (
            line(completions=[{"text": "5", "score": "high"}]),
            "line 1: completions[0].score: must be a finite number, got 'high'",
        ),
        (
            line(completions=[{"text": "5", "score": True}]),
            "line 1: completions[0].score: must be a finite number, got True",
        ),
        (
            '{"prompt": "x", "completions": [{"text": "5", "score": NaN}]}',
            "line 1: completions[0].score: must be a finite number, got nan",
        ),
        (
            line(completions=[{"text": "5", "correct": True}, {"ids": [3], "correct": False}]),
            'line 1: completions[1]: uses "ids" but completions[0] uses "text"; use one completion',
        ),
        (
            line(completions=[{"text": "5", "correct": True}, {"text": "6", "score": 0}]),
            'line 1: completions[1]: uses "score" but completions[0] uses "correct"',
        ),
    ],
)
def test_each_bad_input_names_line_and_field(bad, message):
    (problem,) = problems(bad)
    assert problem.startswith(message), problem


def test_all_problems_are_listed_and_label_kinds_must_agree_across_lines():
    found = problems(
        line(),
        line(completions=[{"text": "5", "score": 1.0}]),
        line(prompt=7),
        "   ",
        line(completions=[{"text": "5"}]),
    )
    assert found == [
        'line 2: completions use "score" but line 1 uses "correct"; use one label kind per file',
        "line 3: prompt: must be a string, got a number (7)",
        'line 5: completions[0]: needs "correct" or "score"',
    ]


def test_empty_and_missing_files_are_errors(tmp_path):
    assert problems("", "  ") == ["no groups: the file has no non-blank lines"]
    with pytest.raises(InputError, match="cannot read"):
        load_groups(tmp_path / "absent.jsonl")
    many = [line(prompt=i) for i in range(30)]
    with pytest.raises(InputError, match=r"30 problem\(s\)[\s\S]*and 10 more"):
        parse_groups(many)


def test_shipped_gsm8k_set_loads():
    data = load_groups(ROOT / "examples" / "data" / "gsm8k_eval.jsonl")
    assert len(data.groups) == 60 and data.label_kind == "correct"
    assert sum(len(g.completions) for g in data.groups) == 240
    assert all(g.status == "scorable" and "messages" in g.prompt for g in data.groups)
    assert sum(sum(g.labels) for g in data.groups) == 112
    assert "MIT License" in (ROOT / "examples" / "data" / "GSM8K_LICENSE").read_text()
