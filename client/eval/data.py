"""The labelled-groups input: one JSON object a line, checked before anything is sent.

A line is one prompt (`prompt` text, chat `messages`, or `prompt_ids`) with its `completions`,
each `{"text": ...}` or `{"ids": [...]}` carrying a label: `correct` (true/false) or `score` (a
number, higher is better). One label kind per file, one completion form per group. Other keys
(e.g. `source`) are kept out of the request and ignored. Every error names the line and field.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PROMPT_FIELDS = ("prompt", "messages", "prompt_ids")
COMPLETION_FIELDS = ("text", "ids")
LABEL_FIELDS = ("correct", "score")
MAX_ERRORS_SHOWN = 20

LabelKind = Literal["correct", "score"]


class InputError(ValueError):
    """The input file is not a valid set of labelled groups; `.problems` lists each one."""

    def __init__(self, path: str, problems: list[str]) -> None:
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {p}" for p in shown)
        tail = f"\n  ... and {more} more" if more else ""
        super().__init__(f"{path}: {len(problems)} problem(s):\n{lines}{tail}")
        self.path = path
        self.problems = problems


@dataclass(frozen=True)
class EvalGroup:
    """One input line: a prompt, its completions and their labels (`correct` as 1.0 / 0.0)."""

    line: int
    id: str | int | None
    prompt: dict[str, Any]  # exactly one of PROMPT_FIELDS, as the wire format spells it
    form: Literal["text", "ids"]
    completions: tuple[Any, ...]
    labels: tuple[float, ...]

    @property
    def name(self) -> str:
        return f"line {self.line}" + (f" (id {self.id!r})" if self.id is not None else "")

    @property
    def status(self) -> Literal["scorable", "empty", "one_label"]:
        """Only a group with two different labels has a pair to compare."""
        if not self.completions:
            return "empty"
        return "scorable" if len(set(self.labels)) > 1 else "one_label"

    @property
    def key(self) -> str:
        """What was scored (not the labels), so a cache stays valid when labels are fixed."""
        blob = json.dumps([self.prompt, self.form, list(self.completions)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def part(self, lo: int, hi: int) -> EvalGroup:
        """Completions lo..hi-1 of this group (to score a group the server finds too large)."""
        return EvalGroup(
            self.line, self.id, self.prompt, self.form, self.completions[lo:hi], self.labels[lo:hi]
        )

    def request(self) -> dict[str, Any]:
        field = "completions" if self.form == "text" else "completion_ids"
        return {"id": self.line, **self.prompt, field: list(self.completions)}


@dataclass(frozen=True)
class EvalSet:
    path: str
    label_kind: LabelKind
    groups: tuple[EvalGroup, ...]


def load_groups(path: str | Path) -> EvalSet:
    """Read and check a labelled-groups JSONL file; raise `InputError` listing every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, [not_utf8(exc)]) from None
    return parse_groups(text.splitlines(), path)


def parse_groups(lines: list[str], path: str = "<input>") -> EvalSet:
    problems: list[str] = []
    groups: list[EvalGroup] = []
    kind: tuple[LabelKind, int] | None = None  # the file's label kind and the line that set it
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            group, line_kind = _parse_line(raw, number)
        except _LineError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if line_kind is not None and kind is not None and line_kind != kind[0]:
            problems.append(
                f'line {number}: completions use "{line_kind}" but line {kind[1]} uses '
                f'"{kind[0]}"; use one label kind per file'
            )
            continue
        if line_kind is not None and kind is None:
            kind = (line_kind, number)
        groups.append(group)
    if not problems and not groups:
        problems.append("no groups: the file has no non-blank lines")
    if problems:
        raise InputError(path, problems)
    return EvalSet(path=path, label_kind=kind[0] if kind else "correct", groups=tuple(groups))


class _LineError(ValueError):
    pass


def _parse_line(raw: str, number: int) -> tuple[EvalGroup, LabelKind | None]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _LineError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {_type(obj)}")
    gid = obj.get("id")
    if gid is not None and (isinstance(gid, bool) or not isinstance(gid, str | int)):
        raise _LineError(f"id: must be a string or an integer, got {_type(gid)}")
    prompt = _parse_prompt(obj)
    if "completions" not in obj:
        raise _LineError('needs "completions": a list of {"text": ..., "correct": ...}')
    items = obj["completions"]
    if not isinstance(items, list):
        raise _LineError(f"completions: must be a list, got {_type(items)}")
    form: str | None = None
    kind: LabelKind | None = None
    completions, labels = [], []
    for i, item in enumerate(items):
        where = f"completions[{i}]"
        value, item_form, label, item_kind = _parse_completion(item, where)
        if form is not None and item_form != form:
            raise _LineError(
                f'{where}: uses "{item_form}" but completions[0] uses "{form}"; '
                "use one completion form per group"
            )
        if kind is not None and item_kind != kind:
            raise _LineError(
                f'{where}: uses "{item_kind}" but completions[0] uses "{kind}"; '
                "use one label kind per file"
            )
        form, kind = item_form, item_kind
        completions.append(value)
        labels.append(label)
    group = EvalGroup(
        line=number,
        id=gid,
        prompt=prompt,
        form=form or "text",  # type: ignore[arg-type]
        completions=tuple(completions),
        labels=tuple(labels),
    )
    return group, kind


def _parse_prompt(obj: dict[str, Any]) -> dict[str, Any]:
    given = [f for f in PROMPT_FIELDS if f in obj]
    if len(given) != 1:
        both = " and ".join(f'"{f}"' for f in given)
        options = ", ".join(f'"{f}"' for f in PROMPT_FIELDS)
        raise _LineError(f"gives {both}; give exactly one" if given else f"needs one of {options}")
    field = given[0]
    value = obj[field]
    if field == "prompt":
        if not isinstance(value, str):
            raise _LineError(f"prompt: must be a string, got {_type(value)}")
    elif field == "messages":
        _check_messages(value)
    else:
        _check_ids(value, "prompt_ids")
    return {field: value}


def _check_messages(value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise _LineError('messages: must be a non-empty list of {"role": ..., "content": ...}')
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _LineError(f"messages[{i}]: must be an object, got {_type(msg)}")
        extra = sorted(set(msg) - {"role", "content"})
        if extra:
            raise _LineError(f'messages[{i}]: unknown field "{extra[0]}" (role, content only)')
        for key in ("role", "content"):
            if not isinstance(msg.get(key), str):
                got = "missing" if key not in msg else _type(msg[key])
                raise _LineError(f"messages[{i}].{key}: must be a string, got {got}")


def _check_ids(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise _LineError(f"{where}: must be a list of token ids, got {_type(value)}")
    for j, tok in enumerate(value):
        if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
            raise _LineError(f"{where}[{j}]: must be a non-negative integer, got {tok!r}")


def _parse_completion(item: Any, where: str) -> tuple[Any, str, float, LabelKind]:
    if not isinstance(item, dict):
        raise _LineError(
            f'{where}: must be an object like {{"text": ..., "correct": true}}, got {_type(item)}'
        )
    forms = [f for f in COMPLETION_FIELDS if f in item]
    if len(forms) != 1:
        raise _LineError(
            f'{where}: gives both "text" and "ids"; give one'
            if forms
            else f'{where}: needs "text" or "ids"'
        )
    form = forms[0]
    value = item[form]
    if form == "text" and not isinstance(value, str):
        raise _LineError(f"{where}.text: must be a string, got {_type(value)}")
    if form == "ids":
        _check_ids(value, f"{where}.ids")
    kinds = [k for k in LABEL_FIELDS if k in item]
    if len(kinds) != 1:
        raise _LineError(
            f'{where}: gives both "correct" and "score"; give one'
            if kinds
            else f'{where}: needs "correct" or "score"'
        )
    kind: LabelKind = kinds[0]  # type: ignore[assignment]
    label = item[kind]
    if kind == "correct":
        if not isinstance(label, bool):
            raise _LineError(f"{where}.correct: must be true or false, got {label!r}")
        return value, form, 1.0 if label else 0.0, kind
    if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
        raise _LineError(f"{where}.score: must be a finite number, got {label!r}")
    return value, form, float(label), kind


def not_utf8(exc: UnicodeDecodeError) -> str:
    return (
        f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} cannot be "
        "decoded; save the file as UTF-8"
    )


def _type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(
        type(value),
        f"a number ({value!r})" if isinstance(value, int | float) else type(value).__name__,
    )
