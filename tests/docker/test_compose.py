"""docker-compose.yml and its CPU override: valid against the Compose Specification, and wired so
the trainer meets a ready server, shares its checkpoints and holds the admin token."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from .files import (
    COMPOSE,
    COMPOSE_CPU,
    HEALTHCHECK,
    ROOT,
    Reset,
    environment,
    load_compose,
    merge,
    mount,
    stages,
    tool,
)

SCHEMA = json.loads((Path(__file__).parent / "compose_spec.json").read_text())
# The file names draft 2019-09 in a spelling jsonschema does not look up; say it outright.
VALIDATOR = jsonschema.Draft201909Validator(SCHEMA)
TOKEN = "test-admin-token"


def _contains_reset(node) -> bool:
    if isinstance(node, Reset):
        return True
    if isinstance(node, dict):
        return any(_contains_reset(v) for v in node.values())
    if isinstance(node, list):
        return any(_contains_reset(v) for v in node)
    return False


@pytest.fixture(scope="module")
def base():
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def cpu(base):
    return merge(base, load_compose(COMPOSE_CPU))


def test_base_file_matches_the_compose_schema(base):
    VALIDATOR.validate(base)


def test_cpu_override_merges_into_a_valid_file(cpu):
    assert not _contains_reset(cpu)
    VALIDATOR.validate(cpu)


def test_the_schema_rejects_a_misspelt_key(base):
    broken = merge(base, {"services": {"reward": {"healthcheck": {"start_perod": "1s"}}}})
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(broken)


def test_gpu_is_reserved_in_the_base_file_only(base, cpu):
    for name in ("reward", "trainer"):
        devices = base["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert "deploy" not in cpu["services"][name], "the CPU stack must not ask for a GPU"


@pytest.mark.parametrize("variant", ["base", "cpu"])
def test_each_variant_builds_from_its_own_dockerfile(variant, base, cpu):
    config = {"base": base, "cpu": cpu}[variant]
    expected = {"base": "docker/Dockerfile.gpu", "cpu": "docker/Dockerfile.cpu"}[variant]
    targets = {"reward": "server", "trainer": "trainer"}
    for name, target in targets.items():
        build = config["services"][name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == expected
        assert target in stages(ROOT / expected), f"{expected} has no stage {target!r}"
        assert build["target"] == target


def test_reward_port_is_published_on_loopback_only(base):
    ports = base["services"]["reward"]["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_healthcheck_is_the_readiness_probe(base):
    check = base["services"]["reward"]["healthcheck"]
    assert check["test"] == ["CMD", "python", "/opt/vigor/healthcheck.py"]
    assert '/ready"' in HEALTHCHECK.read_text()


def test_trainer_waits_for_a_healthy_reward_service(base):
    depends = base["services"]["trainer"]["depends_on"]
    assert depends == {"reward": {"condition": "service_healthy"}}


def test_trainer_talks_to_the_reward_service_by_its_compose_name(base):
    trainer = base["services"]["trainer"]
    assert environment(trainer)["VIGOR_URL"] == "http://reward:8000"
    command = trainer["command"]
    assert command[command.index("--server-url") + 1] == "http://reward:8000"


def test_checkpoints_volume_is_shared_at_the_same_path(base):
    reward, trainer = base["services"]["reward"], base["services"]["trainer"]
    source, read_only = mount(reward, "/checkpoints")
    assert (source, read_only) == ("checkpoints", True), "the server only reads checkpoints"
    assert mount(trainer, "/checkpoints") == ("checkpoints", False)
    # The trainer sends the path it wrote; the server must see it at the same place.
    command = trainer["command"]
    assert command[command.index("--checkpoints-dir") + 1] == "/checkpoints"


def test_the_watcher_follows_a_directory_of_the_shared_checkpoints_volume(base):
    from vigor_service.settings import Settings

    env = environment(base["services"]["reward"])
    watched = env["VIGOR_WATCH_DIR"]
    assert watched.startswith("/checkpoints/"), "inside the volume both services mount"
    assert env["VIGOR_WATCH_PATTERN"] == "${VIGOR_WATCH_PATTERN:-openrlhf}"
    # The images set VIGOR_ALLOWED_WEIGHTS_DIR=["/checkpoints"]: the watch dir must lie under it.
    settings = Settings(
        watch_dir=watched, watch_pattern="openrlhf", allowed_weights_dir=["/checkpoints"]
    )
    assert settings.expects_updates


def test_named_volumes_are_declared_and_used(base):
    declared = set(base["volumes"])
    used = {
        spec.split(":")[0]
        for service in base["services"].values()
        for spec in service.get("volumes", [])
        if not spec.startswith(("/", "."))
    }
    assert used == declared == {"model-cache", "checkpoints", "trainer-output"}
    assert mount(base["services"]["reward"], "/cache") == ("model-cache", False)


def test_admin_token_comes_from_the_env_file_and_is_required(base):
    for name in ("reward", "trainer"):
        value = environment(base["services"][name])["VIGOR_ADMIN_TOKEN"]
        assert value.startswith("${VIGOR_ADMIN_TOKEN:?"), f"{name}: {value}"
    example = (ROOT / ".env.example").read_text()
    assert "VIGOR_ADMIN_TOKEN=\n" in example, ".env.example must not carry a usable token"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


# ---- the real thing: Docker Compose's own parser and merge (no engine needed for `config`) ----


def compose_config(*files: Path, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "VIGOR_"))}
    if token is not None:
        env["VIGOR_ADMIN_TOKEN"] = token
    args = [tool("docker-compose"), "--project-name", "vigor-test"]
    args += ["--project-directory", str(ROOT), "--env-file", os.devnull]  # not the user's .env
    for f in files:
        args += ["-f", str(f)]
    return subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_CPU)], ids=["gpu", "cpu"])
def test_docker_compose_accepts_the_stack(files):
    result = compose_config(*files)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    reward, trainer = config["services"]["reward"], config["services"]["trainer"]
    gpu = len(files) == 1
    assert ("deploy" in reward) is gpu and ("deploy" in trainer) is gpu
    assert reward["build"]["dockerfile"].endswith("Dockerfile.gpu" if gpu else "Dockerfile.cpu")
    assert reward["environment"]["VIGOR_DEVICE"] == ("cuda" if gpu else "cpu")
    assert reward["environment"]["VIGOR_ADMIN_TOKEN"] == TOKEN
    assert [(p["host_ip"], p["target"]) for p in reward["ports"]] == [("127.0.0.1", 8000)]
    assert trainer["depends_on"]["reward"]["condition"] == "service_healthy"


def test_docker_compose_refuses_to_run_without_an_admin_token():
    result = compose_config(COMPOSE, token=None)
    assert result.returncode != 0
    assert "VIGOR_ADMIN_TOKEN" in result.stderr and ".env" in result.stderr
