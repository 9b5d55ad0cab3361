"""The scores file: a header line, then one line per scored group, appended as each completes.

Every line is flushed and synced when written, so an interrupted run keeps everything scored and
`--resume` skips it. Groups are keyed by what was scored (prompt and completions, not labels).
A header records the model, weight version and options: resuming against other weights would mix
two measurements, so it is refused.
"""

from __future__ import annotations

import json
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
        return cls(path, *_read(path))

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


def _read(path: Path) -> tuple[dict[str, Any], dict[str, dict]]:
    lines = path.read_text(encoding="utf-8").split("\n")
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
    if header is None:
        raise CacheError(f"{path}: empty scores file (no header)")
    return header, records


def _is_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except json.JSONDecodeError:
        return False
    return True
