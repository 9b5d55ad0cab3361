"""Readers for the container files, so the tests check what Docker and Compose will see.

Nothing here needs a Docker engine: Dockerfiles are split into instructions, .dockerignore is
matched with Docker's rules (last matching pattern wins, a match on a folder covers its contents),
and compose files are loaded with Compose's `!reset` / `!override` tags and merged.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
ENTRYPOINT = DOCKER / "entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"

# VIGOR_* names that are not server settings: the entrypoint's own opt-out, and the URL the
# trainer (client side) reads.
ENTRYPOINT_ONLY = {"VIGOR_ALLOW_NO_ADMIN_TOKEN"}
CLIENT_SIDE = {"VIGOR_URL"}


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV of this stage alone, values with Docker's quote removal."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                out[key] = value
        return out


def instructions(path: Path) -> list[Instruction]:
    """One entry per instruction: comments dropped, `\\` continuations joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if pending and text.startswith("#"):
            continue
        if not pending:
            start = number
        pending.append(text.removesuffix("\\").strip())
        if not text.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            pending = []
    return out


def stages(path: Path) -> dict[str, Stage]:
    result: dict[str, Stage] = {}
    current: Stage | None = None
    for ins in instructions(path):
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(result))
            current = result[name] = Stage(name, words[0])
        elif current is not None:
            current.instructions.append(ins)
    return result


def copy_sources(ins: Instruction) -> list[str]:
    """Build-context paths a COPY reads (none for `COPY --from=...`)."""
    words = shlex.split(ins.args)
    if any(w.startswith("--from") for w in words):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


def exec_form(args: str) -> list[str]:
    return json.loads(args)


# ---- .dockerignore ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(path: Path = ROOT / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        keep = text.startswith("!")
        pattern = text.removeprefix("!").strip().strip("/")
        rules.append((keep, _pattern_regex(pattern)))
    return rules


def in_build_context(relative: str, rules=None) -> bool:
    """Whether Docker sends this path (relative to the context root) to the build."""
    rules = dockerignore_rules() if rules is None else rules
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for keep, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not keep
    return not excluded


# ---- compose ----


class Reset:
    """Compose's `!reset`: the attribute is removed from the merged model."""


class ComposeLoader(yaml.SafeLoader):
    pass


class Override:
    def __init__(self, value: Any) -> None:
        self.value = value


def _reset(loader: yaml.Loader, node: yaml.Node) -> Reset:
    return Reset()


def _override(loader: yaml.Loader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load_compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # a SafeLoader subclass


def merge(base: Any, override: Any) -> Any:
    """Compose's merge, as far as these files use it: mappings merge key by key, anything else is
    replaced, `!reset` removes and `!override` replaces whole."""
    if isinstance(override, Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = merge({}, value) if isinstance(value, dict) else value
        return out
    return override


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def mount(service: dict[str, Any], target: str) -> tuple[str, bool]:
    """(source, read_only) of the short-syntax volume mounted at `target`."""
    for spec in service.get("volumes", []):
        source, dest, *mode = spec.split(":")
        if dest == target:
            return source, mode == ["ro"]
    raise KeyError(f"nothing mounted at {target}")


# ---- tools from the dev extra ----


def tool(name: str) -> str:
    """Path of a linter installed by the dev extra; a missing one fails in CI, skips elsewhere."""
    import os
    import shutil
    import sys

    import pytest

    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found:
        return found
    message = f"{name} not found: install the dev extra (pip install -e '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
