"""The answer check knows the variant: a fitted combination's score may be positive, a plain or
focal score (a positive weight times −‖∇L‖·√T) may not."""

from __future__ import annotations

import pytest

from vigor_client import VigorProtocolError
from vigor_client._responses import check_rewards
from vigor_client.schema import GroupResult, RewardSpec, RewardsRequest, RewardsResponse

GROUP = {"prompt_ids": [1, 2], "completion_ids": [[3], [4]]}
COMBO = {"name": "fit", "weights": {"vigor": 0.05, "prob_mean": 3.0}}


def answer(scores, spec):
    result = GroupResult(
        rewards=scores, scores=scores, grad_norms=[1.0, 2.0], num_tokens=[1, 1],
        reasons=[None, None],
    )  # fmt: skip
    return RewardsResponse(
        model="m", weight_version=0, groups=[result],
        reward_spec=None if spec is None else RewardSpec.model_validate(spec),
    )  # fmt: skip


@pytest.mark.parametrize("by", ["inline", "name"])
def test_a_combination_s_positive_scores_pass(by):
    request = RewardsRequest(
        groups=[GROUP], shaping="none", reward_spec=COMBO if by == "inline" else "fit"
    )
    ok = answer([0.25, -0.5], COMBO)
    assert check_rewards(request, ok, "http://x") is ok


@pytest.mark.parametrize(
    "spec", [None, {"name": "vigor"}, {"name": "f", "focal": {"metric": "entropy"}}]
)
def test_a_positive_plain_or_focal_score_is_refused(spec):
    request = RewardsRequest(groups=[GROUP], shaping="none")
    with pytest.raises(VigorProtocolError, match=r"scores\[0\] is 0.25, outside"):
        check_rewards(request, answer([0.25, -0.5], spec), "http://x")
