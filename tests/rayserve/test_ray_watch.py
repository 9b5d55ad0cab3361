"""The checkpoint watcher behind `vigor-serve --ray`: it runs in the ingress and loads each step
on every replica through ClusterWeights.reload, as /admin/weights/reload does there."""

from __future__ import annotations

import shutil

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from ..servers import ProcessServer, until
from .conftest import running_ray_app
from .test_ray_serve import agreeing, close, replica_names, scores_of

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    return tmp_path_factory.mktemp("watched")


@pytest.fixture(scope="module")
def ray_watch_app(tiny_chat_model_dir, watched):
    # The poll is slow on purpose: the scoring call must find the step, not the poll.
    watching = {"watch_dir": watched, "watch_interval_s": 30}
    with running_ray_app(tiny_chat_model_dir, watched, **watching) as url:
        yield url


def step_dir(model_dir, root, step: int):
    """A whole checkpoint directory of the tiny chat model, every weight moved."""
    path = root / f"global_step{step}_hf"
    shutil.copytree(model_dir, path)
    state = load_file(str(path / "model.safetensors"))
    gen = torch.Generator().manual_seed(step)
    moved = {
        k: (v + 0.02 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in state.items()
    }
    save_file(moved, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_a_step_written_next_to_the_ray_app_is_scored_on_every_replica(
    ray_watch_app, tiny_chat_model_dir, watched, tmp_path
):
    from vigor_service.rayserve.app import APP_NAME
    from vigor_service.rayserve.ledger import NAMESPACE, ledger_name

    ledger = ray.get_actor(ledger_name(APP_NAME), namespace=NAMESPACE)
    before = scores_of(ray_watch_app)
    path = step_dir(tiny_chat_model_dir, watched, 3)
    r = httpx.post(
        ray_watch_app + "/v1/rewards",
        json={"groups": [{"prompt": "Say hello", "completions": ["Hello!", "hi there"]}]},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    assert r.json()["weight_version"] == 3  # the request waited for the step it found
    n = len(replica_names())
    until(lambda: agreeing(ledger, n, 3), "step 3 on every replica", within_s=60, every_s=0.5)
    got = scores_of(ray_watch_app)
    fresh = ProcessServer("--model", str(path), "--dtype", "float64")
    fresh.start(tmp_path / "fresh.log")
    try:
        want = scores_of(fresh.url)
    finally:
        fresh.stop()
    assert all(close(g, w) for g, w in zip(got, want, strict=True))
    assert not all(close(g, b) for g, b in zip(got, before, strict=True))
    info = httpx.get(ray_watch_app + "/v1/model", timeout=30).json()
    assert info["weight_version"] == 3 and info["watch"]["loaded_step"] == 3
