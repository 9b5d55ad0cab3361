"""Tied embedding/lm_head cross term, through the capture machinery on a small hand-built model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vigor_service.engine.norms import capturing, plan_norms
from vigor_service.engine.reference import only_these_require_grad


class TiedLM(nn.Module):
    def __init__(self, vocab=7, d=5, padding_idx=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=padding_idx, dtype=torch.float64)
        self.mix = nn.Linear(d, d, dtype=torch.float64)
        self.head = nn.Linear(d, vocab, bias=False, dtype=torch.float64)
        self.head.weight = self.embed.weight

    def forward(self, ids, index):
        h = torch.tanh(self.mix(self.embed(ids))).cumsum(1)  # causal mixing across positions
        return self.head(h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1])))


@pytest.mark.parametrize("padding_idx", [None, 3])
@pytest.mark.parametrize("form", ["ghost", "direct"])
def test_tied_norm_matches_autograd(padding_idx, form):
    torch.manual_seed(0)
    model = TiedLM(padding_idx=padding_idx)
    ids = torch.tensor([[3, 1, 3, 5, 2, 3], [4, 3, 6, 0, 0, 0]])
    lengths = torch.tensor([6, 3])
    token_mask = torch.arange(6)[None] < lengths[:, None]
    index = torch.tensor([[1, 2, 4, 5], [0, 1, 0, 0]])
    head_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    weights = torch.randn(2, 4, 7, dtype=torch.float64) * head_mask.unsqueeze(-1)

    def losses():
        return (model(ids, index) * weights).sum(dim=(1, 2))

    params = list(model.parameters())
    want = []
    for i in range(2):
        grads = torch.autograd.grad(losses()[i], params)
        want.append(sum(float(g.pow(2).sum()) for g in grads))

    plan = plan_norms(model, params)
    assert len(plan.tied) == 1
    with only_these_require_grad(model, []), capturing(model, plan, form) as capture:
        capture.start({(2, 6): token_mask, (2, 4): head_mask}, torch.float64, torch.device("cpu"))
        loss = losses().sum()
        with capture.backward_phase():
            loss.backward()
        got = capture.finish()
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
