"""The scores file: written through, resumable, never overwritten, never mixed across weights."""

import json

import pytest

from vigor_client.eval import CacheError, ScoreCache
from vigor_client.eval.cache import FORMAT

HEADER = {"model": "m", "weight_version": 3, "temperature": 1.0, "signals": ["entropy_mean"]}


def rec(key):
    return {"key": key, "line": 1, "scores": [1.0]}


def test_records_are_on_disk_as_soon_as_appended(tmp_path):
    path = tmp_path / "s.jsonl"
    cache = ScoreCache.open(path, resume=False)
    cache.check_or_set_header(HEADER)
    cache.append(rec("a"))
    # not closed: a Ctrl-C here must still leave both lines in the file
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [{"format": FORMAT, **HEADER}, rec("a")]
    cache.close()
    again = ScoreCache.open(path, resume=True)
    assert set(again.records) == {"a"} and again.header["weight_version"] == 3


def test_an_existing_file_needs_resume(tmp_path):
    path = tmp_path / "s.jsonl"
    with ScoreCache.open(path, resume=False) as cache:
        cache.check_or_set_header(HEADER)
    with pytest.raises(CacheError, match="already holds scores: pass --resume"):
        ScoreCache.open(path, resume=False)
    assert ScoreCache.open(tmp_path / "new.jsonl", resume=True).records == {}


@pytest.mark.parametrize(
    ("key", "value"), [("model", "other"), ("weight_version", 4), ("temperature", 0.7)]
)
def test_resuming_on_other_weights_or_options_is_refused(tmp_path, key, value):
    path = tmp_path / "s.jsonl"
    with ScoreCache.open(path, resume=False) as cache:
        cache.check_or_set_header(HEADER)
    cache = ScoreCache.open(path, resume=True)
    cache.check_or_set_header(dict(HEADER))  # the same: fine
    with pytest.raises(CacheError, match=f"scored with {key} = .* but this run has {value!r}"):
        cache.check_or_set_header({**HEADER, key: value})


def test_a_partial_last_line_is_dropped_and_appends_start_clean(tmp_path):
    path = tmp_path / "s.jsonl"
    head = json.dumps({"format": FORMAT, **HEADER})
    path.write_text(f'{head}\n{json.dumps(rec("a"))}\n{{"key": "b", "sco')
    with ScoreCache.open(path, resume=True) as cache:
        assert set(cache.records) == {"a"}
        cache.append(rec("c"))
    assert set(ScoreCache.open(path, resume=True).records) == {"a", "c"}
    # a complete last line without its newline (edited by hand) is kept
    path.write_text(f"{head}\n{json.dumps(rec('a'))}")
    with ScoreCache.open(path, resume=True) as cache:
        cache.append(rec("d"))
    assert set(ScoreCache.open(path, resume=True).records) == {"a", "d"}


def test_corrupt_files_name_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    head = json.dumps({"format": FORMAT, **HEADER})
    path.write_text(f"{head}\nnot json\n{json.dumps(rec('a'))}\n")
    with pytest.raises(CacheError, match=r"s.jsonl line 2: not valid JSON"):
        ScoreCache.open(path, resume=True)
    path.write_text(f'{head}\n{{"line": 1}}\n')
    with pytest.raises(CacheError, match=r"line 2: a scored group needs a string \"key\""):
        ScoreCache.open(path, resume=True)
    path.write_text('{"model": "m"}\n')
    with pytest.raises(CacheError, match="line 1: not a vigor-eval scores file"):
        ScoreCache.open(path, resume=True)
