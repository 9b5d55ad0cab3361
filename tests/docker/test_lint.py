"""Linters over the container files: hadolint on every Dockerfile, shellcheck on the entrypoint."""

from __future__ import annotations

import subprocess

import pytest

from .files import DOCKERFILES, ENTRYPOINT, ROOT, tool


def test_there_are_dockerfiles():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.gpu", "Dockerfile.cpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    # Default failure threshold: any finding, down to "info", fails.
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_says_why(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and len(before) > 10, (
                f"{dockerfile.name}:{number + 1}: an inline ignore needs a comment line above "
                "it saying why"
            )


def test_shellcheck_entrypoint():
    result = subprocess.run(
        [tool("shellcheck"), "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
