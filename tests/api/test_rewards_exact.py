"""End to end over real HTTP: rewards equal the naive float64 VIGOR computation.

Tiny random models are served in-process by uvicorn on a loopback port; the oracle is
tests/naive.py, which shares no code with the service.
"""

import math

import httpx
import pytest
import torch

from vigor_service.app import create_app
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ..naive import naive_grad_norm, naive_rank_rewards, naive_score
from ..servers import ThreadServer
from ..tiny_models import TINY_MODELS, random_groups

ENGINES = ["loop", "batched"]


def serve_tiny(model, engine: str) -> ThreadServer:
    loaded = LoadedModel(name="tiny", path=None, model=model, tokenizer=None)
    settings = Settings(engine=engine, max_batch_tokens=64)
    return ThreadServer(create_app(settings, loaded=loaded))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_http_rewards_equal_naive_vigor(engine, name, dtype, tol):
    model = TINY_MODELS[name](dtype=dtype)
    groups = random_groups(
        seed=7, prompt_lens=(5, 3, 2), completion_lens=((4, 9, 0, 1), (6,), (3, 3))
    )
    body = {
        "groups": [
            {"id": f"g{i}", "prompt_ids": p, "completion_ids": cs}
            for i, (p, cs) in enumerate(groups)
        ],
    }
    with serve_tiny(model, engine) as server:
        ranked = httpx.post(server.url + "/v1/rewards", json=body, timeout=60).json()
        raw = httpx.post(
            server.url + "/v1/rewards", json={**body, "shaping": "none"}, timeout=60
        ).json()
    assert ranked["weight_version"] == 0
    for (prompt, comps), got, got_raw in zip(groups, ranked["groups"], raw["groups"], strict=True):
        norms = [naive_grad_norm(model, prompt, c) for c in comps]
        scores = [naive_score(n, len(c)) for n, c in zip(norms, comps, strict=True)]
        assert got["num_tokens"] == [len(c) for c in comps]
        for g, w in zip(got["grad_norms"], norms, strict=True):
            assert (g is None and w is None) or g == pytest.approx(w, rel=tol)
        for g, w in zip(got["scores"], scores, strict=True):
            assert (g is None and w is None) or g == pytest.approx(w, rel=tol)
        assert got["reasons"] == [None if s is not None else "empty_completion" for s in scores]
        assert got["rewards"] == pytest.approx(naive_rank_rewards(scores))
        assert got_raw["rewards"] == got_raw["scores"] == got["scores"]
        assert all(r is None or -1.0 <= r <= 1.0 for r in got["rewards"])
        assert all(s is None or math.isfinite(s) for s in got["scores"])
