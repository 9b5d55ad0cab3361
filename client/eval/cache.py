"""The scores file: a header line, then one line per scored group, appended as each completes.

Every line is flushed and synced when written, so an interrupted run keeps everything scored and
`--resume` skips it. Groups are keyed by what was scored (prompt and completions, not labels).
A header records the model, weight version and options: resuming against other weights would mix
two measurements, so it is refused. A record that is not what the server could have answered (a
positive score, a probability above 1, lists of different lengths, a value that is not a finite
number) is dropped by `drop_corrupt` (vigor-eval calls it on --resume), named in `dropped`, and
its group scored again.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

FORMAT = "vigor-eval-scores/1"
HEADER_KEYS = ("model", "weight_version", "temperature", "signals")


class CacheError(ValueError):
    pass


class ScoreCache:
    """Records by group key; `append` writes through to the file at once."""

    def __init__(self, path: str | Path, header: dict[str, Any] | None, records: dict[str, dict]):
        self.path = Path(path)
        self.header = header
        self.records = records
        self.dropped: list[str] = []  # records refused on reading (their groups are rescored)
        self.skipped: dict[str, str] = {}  # group key -> why it could not be scored
        self._lines: dict[str, int] = {}  # group key -> its line in the file
        self._file: IO[str] | None = None

    @classmethod
    def open(cls, path: str | Path, *, resume: bool) -> ScoreCache:
        """A new cache, or (resume) the one at `path`. An existing file is never overwritten."""
        path = Path(path)
        exists = path.exists() and path.stat().st_size > 0
        if exists and not resume:
            raise CacheError(
                f"{path} already holds scores: pass --resume to continue it, or choose another "
                "--scores file (or delete it) to start over"
            )
        if not exists:
            return cls(path, None, {})
        header, records, lines = _read(path)
        cache = cls(path, header, records)
        cache._lines = lines
        return cache

    def drop_corrupt(self) -> None:
        """Set aside every record the server could not have answered, naming its line."""
        for key, obj in list(self.records.items()):
            problem = record_problem(obj)
            if problem is not None:
                del self.records[key]
                line = self._lines.get(key)
                where = f"{self.path} line {line}" if line else f"{self.path} key {key}"
                self.dropped.append(f"{where}: {problem}; its group is scored again")

    def check_or_set_header(self, header: dict[str, Any]) -> None:
        """Fix the header of a new cache; refuse one scored on other weights or options."""
        if self.header is None:
            self.header = {"format": FORMAT, **header}
            self._write(self.header)
            return
        for key in HEADER_KEYS:
            if self.header.get(key) != header.get(key):
                raise CacheError(
                    f"{self.path} was scored with {key} = {self.header.get(key)!r} but this run "
                    f"has {header.get(key)!r}; mixing them would mix two measurements. Use another "
                    "--scores file."
                )

    def append(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        self._write(record)

    def _write(self, obj: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(path: Path) -> tuple[dict[str, Any], dict[str, dict], dict[str, int]]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise CacheError(
            f"{path}: not a vigor-eval scores file: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} is not UTF-8; choose another --scores file (or delete it)"
        ) from None
    # A run killed mid-write leaves at most a partial last line (no newline): drop it, so the
    # next append starts on a line of its own.
    if lines and lines[-1] and not _is_json(lines[-1]):
        with open(path, "r+", encoding="utf-8") as f:
            f.truncate(len("\n".join(lines[:-1]).encode()) + (1 if len(lines) > 1 else 0))
        lines = lines[:-1]
    elif lines and lines[-1]:  # a complete last line without its newline (edited by hand)
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n")
    header: dict[str, Any] | None = None
    records: dict[str, dict] = {}
    where: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CacheError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if number == 1:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise CacheError(
                    f"{path} line 1: not a vigor-eval scores file (no {FORMAT} header)"
                )
            header = obj
        elif not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            raise CacheError(f'{path} line {number}: a scored group needs a string "key"')
        else:
            records[obj["key"]] = obj
            where[obj["key"]] = number
    if header is None:
        raise CacheError(f"{path}: empty scores file (no header)")
    return header, records, where


# What each recorded value can be, as the server computes it: (low, high), None = unbounded.
BOUNDS = {
    "scores": (None, 0.0),  # −‖∇L‖·√T
    "self_certainty": (0.0, None),  # a KL divergence
    "entropy_mean": (0.0, None),
    "logprob_mean": (None, 0.0),
    "logprob_sum": (None, 0.0),
    "prob_mean": (0.0, 1.0),
}


SLACK = 1e-6


def record_problem(obj: dict[str, Any]) -> str | None:
    """Why a scored-group record cannot be what the server answered, or None."""
    n = obj.get("num_tokens")
    if not isinstance(n, list) or not all(type(t) is int and t >= 0 for t in n):
        return "num_tokens is not a list of non-negative integers"
    columns = {"scores": obj.get("scores"), "reasons": obj.get("reasons")}
    signals = obj.get("signals")
    if not isinstance(signals, dict):
        return "signals is not an object"
    columns |= {f"signals.{k}": v for k, v in signals.items()}
    for name, values in columns.items():
        if not isinstance(values, list) or len(values) != len(n):
            return f"{name} is not a list of {len(n)} values (one per completion)"
        if name == "reasons":
            if not all(v is None or isinstance(v, str) for v in values):
                return "reasons holds something other than text or null"
            continue
        low, high = BOUNDS.get(name.removeprefix("signals."), (None, None))
        for j, v in enumerate(values):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return f"{name}[{j}] is {v!r}, not a finite number"
            # a rounding error's slack: a KL or an entropy can come out as -1e-9
            if (low is not None and v < low - SLACK) or (high is not None and v > high + SLACK):
                return f"{name}[{j}] is {v!r}, outside what the server computes"
    return None


def _is_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except json.JSONDecodeError:
        return False
    return True
