"""Weights on the server's disk: where a reload may read, and reading checkpoints strictly.

Only safetensors is read: a `.bin` checkpoint is a pickle, and unpickling a file named by an HTTP
request would run whatever code it holds.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch

from ..errors import DeadlineExceededError, PathNotAllowedError, WeightsRejectedError
from .payload import Payload, parse_safetensors

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CHUNK = 64 << 20


class Cancelled(DeadlineExceededError):
    """The request gave up (deadline); stop reading. bounded.py words the answer."""

    def __init__(self) -> None:
        super().__init__("the deadline passed while reading; nothing was applied")


def confine(path: str, allowed: list[Path]) -> Path:
    """The real path (symlinks and `..` resolved) — refused unless under an allowed directory."""
    if not Path(path).is_absolute():
        raise WeightsRejectedError([f"path {path!r} must be absolute (the server's own disk)"])
    real = Path(os.path.realpath(path))
    if allowed:
        roots = [Path(os.path.realpath(a)) for a in allowed]
        if not any(real == root or real.is_relative_to(root) for root in roots):
            shown = ", ".join(str(a) for a in allowed)
            raise PathNotAllowedError(
                f"path {path!r} resolves outside the allowed weights directories ({shown})"
            )
    try:
        os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        pass  # the caller names what is missing
    except OSError as exc:  # a name too long, a loop, no permission: the caller's input
        raise WeightsRejectedError([f"cannot read path {path!r}: {exc.strerror}"]) from None
    return real


def checkpoint_files(path: Path, allowed: list[Path]) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a checkpoint, and the sharded index's name → file map if any."""
    if path.is_file():
        if path.suffix != ".safetensors":
            raise WeightsRejectedError([f"{path} is not a .safetensors file"])
        return [path], None
    if not path.is_dir():
        raise WeightsRejectedError([f"cannot read {path}: no such file or directory"])
    index = path / INDEX
    if index.is_file():
        weight_map = _read_index(confine(str(index), allowed))  # a symlink out is refused
        files = []
        for shard in sorted(set(weight_map.values())):
            real = confine(str(path / shard), allowed)
            if not real.is_file():
                raise WeightsRejectedError([f"{INDEX} names shard {shard!r}, which is missing"])
            files.append(real)
        return files, weight_map
    if (path / SINGLE).is_file():
        return [confine(str(path / SINGLE), allowed)], None
    raise WeightsRejectedError(
        [f"{path} holds neither {SINGLE} nor {INDEX} (only safetensors checkpoints are read)"]
    )


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        # The error's type only: its text could quote the file.
        why = type(exc).__name__
        raise WeightsRejectedError(
            [f"cannot read {index.name}: not a JSON object with a weight_map ({why})"]
        ) from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise WeightsRejectedError([f"{index.name}: weight_map must map names to file names"])
    return weight_map


def read_checkpoint(
    files: list[Path],
    weight_map: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, torch.Tensor]:
    """Every tensor of the files, copied into memory (a file rewritten later changes nothing)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        for name, tensor in read_file(file, cancel).tensors.items():
            if name in tensors:
                raise WeightsRejectedError([f"tensor {name!r} appears in more than one shard"])
            if weight_map is not None and Path(weight_map.get(name, "")).name != file.name:
                raise WeightsRejectedError(
                    [f"tensor {name!r} is in {file.name} but {INDEX} places it elsewhere"]
                )
            tensors[name] = tensor
    if weight_map is not None and (absent := sorted(set(weight_map) - set(tensors))):
        raise WeightsRejectedError(
            [f"{INDEX} lists {len(absent)} tensors no shard holds, e.g. {absent[0]!r}"]
        )
    return tensors


def read_file(file: Path, cancel: threading.Event | None = None) -> Payload:
    """The whole file read into memory, then parsed (its tensors view that one buffer)."""
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            buf = bytearray(size)
            view, at = memoryview(buf), 0
            while at < size:
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                n = f.readinto(view[at : at + CHUNK])
                if not n:
                    break
                at += n
    except OSError as exc:
        raise WeightsRejectedError([f"cannot read {file}: {exc.strerror or exc}"]) from None
    if at != size:
        raise WeightsRejectedError([f"cannot read {file}: it shrank while being read"])
    try:
        return parse_safetensors(buf)
    except WeightsRejectedError as exc:
        raise WeightsRejectedError([f"{file.name}: {p}" for p in exc.problems]) from None
