"""`vigor-eval` without a server: argument and input errors, and sets with nothing to score."""

import json

import pytest

from vigor_client.eval.cli import main
from vigor_client.eval.plot import plot_report
from vigor_client.eval.report import build_report

from ...servers import free_port


def write(path, *objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_input_errors_exit_2_naming_line_and_field(tmp_path, capsys):
    data = write(
        tmp_path / "in.jsonl",
        {"prompt": "x", "completions": [{"text": "a", "correct": True}]},
        {"prompt": "y", "completions": [{"text": "a", "correct": True}, {"text": "b"}]},
    )
    assert main([str(data), "--scores", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert 'line 2: completions[1]: needs "correct" or "score"' in err and str(data) in err
    assert not (tmp_path / "s.jsonl").exists()  # nothing written for a bad input


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--groups-per-request", "0"], "--groups-per-request must be at least 1"),
        (["--bootstrap", "0"], "--bootstrap must be at least 1"),
        (["--temperature", "0"], "--temperature must be positive"),
        (["--resum"], "unrecognized arguments: --resum"),  # no abbreviations
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "in.jsonl"), *flags])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_groups_without_pairs_are_counted_and_need_no_server(tmp_path, capsys):
    data = write(
        tmp_path / "in.jsonl",
        {"prompt": "x", "completions": [{"text": "a", "correct": True}]},
        {"prompt": "y", "completions": []},
        {"prompt": "z", "completions": [{"text": "a", "correct": False}] * 2},
    )
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: a request would fail
    out_json = tmp_path / "r.json"
    args = [str(data), "--url", url, "--scores", str(tmp_path / "s.jsonl"), "--json", str(out_json)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "3 in file, 0 scored; 1 empty, 2 with one label only" in table
    assert "empty: lines 2" in table and "one label only: lines 1, 3" in table
    report = json.loads(out_json.read_text())
    assert report["signals"]["vigor"]["auroc"] is None and report["signals"]["vigor"]["ci"] is None


def test_unreachable_server_and_existing_scores_exit_1(tmp_path, capsys):
    data = write(
        tmp_path / "in.jsonl",
        {
            "prompt": "x",
            "completions": [{"text": "a", "correct": True}, {"text": "b", "correct": False}],
        },
    )
    scores = tmp_path / "s.jsonl"
    url = f"http://127.0.0.1:{free_port()}"
    assert main([str(data), "--url", url, "--scores", str(scores), "--timeout", "5"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    scores.write_text('{"format": "vigor-eval-scores/1"}\n')
    assert main([str(data), "--url", url, "--scores", str(scores)]) == 1
    assert "pass --resume" in capsys.readouterr().err


def test_plot_draws_a_png_from_a_report(tmp_path):
    pytest.importorskip("matplotlib")
    from vigor_client.eval import parse_groups

    from .test_report import HEADER, group, record

    data = parse_groups([group("A", [True, False, False]), group("B", [True, True, False])])
    a, b = data.groups
    records = {
        a.key: record(a, [1.0, 0.0, 2.0], [3, 4, 5]),
        b.key: record(b, [1.0, 2.0, 0.0], [1, 1, 1]),
    }
    out = plot_report(build_report(data, records, HEADER, bootstrap=100), tmp_path / "p" / "x.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
