"""Step directories in a watched checkpoint directory: which exist, and which are complete.

No trainer marks a Hugging Face checkpoint complete: OpenRLHF writes config.json before the
weights and the weight files in place; verl's tracker file is written after the save but not
atomically. So a step is ready only when every safetensors file it needs is complete by its own
header: 8 + header length + the end of the last tensor's data equals the file's size. A file
still being written is shorter; a sharded save whose index is not written yet is not ready.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PRESETS = {
    "openrlhf": "global_step{step}_hf",
    "verl": "global_step_{step}/actor/huggingface",
    "trl": "checkpoint-{step}",
}
DEFAULT_TRACKER = "latest_checkpointed_iteration.txt"  # verl's
DEFAULT_MARKER = "READY"
MAX_HEADER = 100 << 20


class StepPattern:
    """`global_step{step}_hf`, `global_step_{step}/actor/huggingface`: {step} in the first part."""

    def __init__(self, pattern: str) -> None:
        self.pattern = PRESETS.get(pattern, pattern)
        first, _, rest = self.pattern.partition("/")
        if self.pattern.count("{step}") != 1 or "{step}" not in first:
            raise ValueError(
                f"watch pattern {pattern!r} must hold {{step}} once, in its first path part, or "
                f"be a preset ({', '.join(PRESETS)})"
            )
        if self.pattern.startswith("/") or ".." in Path(self.pattern).parts:
            raise ValueError(f"watch pattern {pattern!r} must be a relative path inside the dir")
        head, tail = first.split("{step}")
        self._first = re.compile(re.escape(head) + r"(\d{1,18})" + re.escape(tail))
        self._rest = rest

    def scan(self, root: Path) -> dict[int, tuple[Path, Path]]:
        """step → (the directory named by the first part, the checkpoint directory)."""
        out: dict[int, tuple[Path, Path]] = {}
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return out
        for entry in entries:
            m = self._first.fullmatch(entry.name)
            if m is None or not entry.is_dir(follow_symlinks=False):
                continue
            top = Path(entry.path)
            out[int(m.group(1))] = (top, top / self._rest if self._rest else top)
        return out


@dataclass(frozen=True)
class Readiness:
    ready: bool
    why: str  # what is missing while not ready


def fingerprint(top: Path, path: Path) -> tuple:
    """Names, sizes and modification times: it changes while anything is written."""
    where = path if path.is_dir() else top
    try:
        files = sorted(os.scandir(where), key=lambda e: e.name)
        return tuple((e.name, *_stat(e)) for e in files)
    except OSError:
        return ()


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def file_complete(file: Path) -> str | None:
    """None when the file is a whole safetensors file by its own header, else what is missing."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{file.name}: header not written yet"
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER:
                return None  # not a safetensors header: the reload names the problem
            if size < 8 + n:
                return f"{file.name}: header not written yet"
            raw = f.read(n)
    except FileNotFoundError:
        return f"{file.name} not written yet"
    except OSError:
        return f"{file.name}: not readable yet"
    try:
        header = json.loads(raw)
    except ValueError:
        return None  # all its bytes are there and it is no header: the reload refuses it
    if not isinstance(header, dict):
        return None
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
        and len(v["data_offsets"]) == 2 and isinstance(v["data_offsets"][1], int)
    ]  # fmt: skip
    want = 8 + n + max(ends, default=0)
    if size < want:
        return f"{file.name}: {size} of {want} bytes written"
    return None  # complete (a longer file is the reload's to refuse)


def weights_complete(path: Path) -> Readiness:
    if not path.is_dir():
        return Readiness(False, f"{path} does not exist yet")
    index = path / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return Readiness(False, f"{INDEX} not readable yet")
        files = [path / s for s in shards if isinstance(s, str)]
    elif (path / SINGLE).is_file():
        files = [path / SINGLE]
    else:
        return Readiness(False, f"no {SINGLE} or {INDEX} yet")
    for file in files:
        if (missing := file_complete(file)) is not None:
            return Readiness(False, missing)
    return Readiness(True, "")


def read_tracker(file: Path) -> int | None:
    """The step a tracker file names; None while absent or half-written (it is not atomic)."""
    try:
        text = file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def readiness(rule: str, ready_file: str | None, root: Path, step: int, path: Path) -> Readiness:
    complete = weights_complete(path)
    if not complete.ready or rule == "complete":
        return complete
    if rule == "tracker":
        name = ready_file or DEFAULT_TRACKER
        named = read_tracker(root / name)
        if named is None or named < step:
            return Readiness(False, f"{name} names step {named}, not {step} yet")
        return complete
    name = ready_file or DEFAULT_MARKER
    if not (path / name).exists():
        return Readiness(False, f"marker {name} not written yet")
    return complete
