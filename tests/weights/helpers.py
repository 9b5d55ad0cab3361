"""Tiny in-process servers and checkpoints for weight-plane tests."""

from __future__ import annotations

from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

from vigor_service.app import create_app
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ..servers import ThreadServer
from ..tiny_models import tiny_llama

GROUPS = [{"prompt_ids": [1, 2, 3], "completion_ids": [[4, 5], [6, 7, 8], [9]]}]


def tiny_server(model: torch.nn.Module | None = None, **settings) -> ThreadServer:
    """A ThreadServer (use as a context manager) serving a tiny tied float32 Llama."""
    model = model if model is not None else tiny_llama(tied=True, dtype=torch.float32)
    app = create_app(Settings(**settings), loaded=LoadedModel("tiny", Path("."), model, None))
    return ThreadServer(app)


def runtime_of(server: ThreadServer):
    return server.server.config.app.state.runtime


def scores(url: str, headers: dict | None = None) -> tuple[int, list[float]]:
    r = httpx.post(
        url + "/v1/rewards",
        json={"groups": GROUPS, "shaping": "none"},
        headers=headers or {},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    return body["weight_version"], body["groups"][0]["scores"]


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def perturbed(sd: dict[str, torch.Tensor], scale=0.01, seed=1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        noise = torch.randn(v.shape, generator=gen, dtype=torch.float64)
        out[k] = (v.double() + scale * noise).to(v.dtype)
    head, emb = sd.get("lm_head.weight"), sd.get("model.embed_tokens.weight")
    if head is not None and emb is not None and torch.equal(head, emb):
        out["lm_head.weight"] = out["model.embed_tokens.weight"]  # tied: one tensor, two names
    return out


def save_checkpoint(sd: dict[str, torch.Tensor], path: Path, drop_tied=True) -> Path:
    """An HF-style checkpoint directory (model.safetensors), the tied lm_head left out."""
    path.mkdir(parents=True, exist_ok=True)
    skip = {"lm_head.weight"} if drop_tied else set()
    tensors = {k: v.contiguous() for k, v in sd.items() if k not in skip}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def admin(url: str, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.request(method, url + path, headers=headers, timeout=60, **kw)
