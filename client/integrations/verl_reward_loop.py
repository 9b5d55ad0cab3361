"""A verl ≥ 0.7 reward-loop manager backed by the service: whole-group VIGOR rewards per `uid`.

verl's reward loop (the default since 0.7; the `batch` manager is gone since 0.7.1) hands a
manager one sample per `run_single` call, from several reward-loop workers at once, and a chunk
of the batch can split a `uid` group. A reward function alone cannot rank such a sample against
its group, so this manager sends each sample to the server's group assembler: the group key is
the sample's `uid`, its size `actor_rollout_ref.rollout.n`; the server holds the samples until the
group is whole, scores it in one pass at one weight version, and answers each call with its own
sample's rank reward in [−1, 1]. Token ids are sent as verl holds them (no decode → encode).

    reward.reward_manager.source=importlib
    reward.reward_manager.name=VigorRewardManager
    reward.reward_manager.module.path=$(python -m vigor_client.integrations.verl_reward_loop)
    +reward.reward_kwargs.server_url=http://127.0.0.1:8000

Other `reward.reward_kwargs` keys: `group_size` (default rollout.n), `hold_s`, `timeout`,
`api_token` (default $VIGOR_API_TOKEN). A sample whose group does not complete raises, naming
the uid and the fix: there is no reward to invent. Imports are absolute because verl loads this
file as a standalone module.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from vigor_client.client import DEFAULT_URL, AsyncVigorClient
from vigor_client.integrations.verl_config import config_value
from vigor_client.schema import Group
from vigor_client.wire import stand_in_floor

KWARGS = ("server_url", "group_size", "hold_s", "timeout", "api_token")


def reward_kwargs(config: Any) -> dict[str, Any]:
    """This manager's settings from `reward.reward_kwargs`; unknown vigor-looking keys refused."""
    raw = dict(config_value(config, "reward.reward_kwargs", {}) or {})
    ours = {k: raw[k] for k in KWARGS if k in raw}
    url = str(ours.get("server_url") or os.environ.get("VIGOR_URL") or DEFAULT_URL)
    if "," in url:
        raise ValueError(
            f"reward.reward_kwargs.server_url={url!r} lists several servers: the samples of one "
            "group must reach the same server to be assembled; put one endpoint in front of "
            "the replicas (docs/integrations.md)"
        )
    ours["server_url"] = url
    return ours


def group_size_of(config: Any, configured: Any = None) -> int:
    """The samples per uid: `reward_kwargs.group_size`, else `actor_rollout_ref.rollout.n`."""
    n = configured
    if n is None:
        n = config_value(config, "actor_rollout_ref.rollout.n")
    if not isinstance(n, int) or n < 1:
        raise ValueError(
            f"cannot tell the group size (actor_rollout_ref.rollout.n={n!r}); set "
            "+reward.reward_kwargs.group_size"
        )
    return n


def check_validation(config: Any, n: int) -> None:
    """Validation groups hold `val_kwargs.n` samples per uid; refuse a size they never reach."""
    val_n = config_value(config, "actor_rollout_ref.rollout.val_kwargs.n", 1)
    runs = bool(config_value(config, "trainer.val_before_train", False)) or (
        (config_value(config, "trainer.test_freq", -1) or -1) > 0
    )
    if runs and config_value(config, "data.val_files") and val_n != n:
        raise ValueError(
            f"validation samples {val_n} completions per uid (rollout.val_kwargs.n) but VIGOR "
            f"groups hold {n} (rollout.n): validation groups would never complete. Set "
            f"actor_rollout_ref.rollout.val_kwargs.n={n} (with val_kwargs.do_sample=True), or "
            "turn validation off (trainer.val_before_train=False trainer.test_freq=-1)"
        )


def sample_ids(item: Any) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one DataProto item, padding removed.

    The agent loop passes unpadded rows with an all-ones mask; the batch path left-pads prompts
    and right-pads responses, with `attention_mask` over prompt + response marking real tokens.
    """
    prompts, responses = item.batch["prompts"], item.batch["responses"]
    mask = item.batch["attention_mask"]
    p_len, r_len = prompts.shape[-1], responses.shape[-1]
    prompt_ids = prompts[mask[:p_len].bool()].tolist()
    n_valid = int(mask[-r_len:].sum())
    return prompt_ids, responses[:n_valid].tolist()


class VigorRewardManager(RewardManagerBase):
    """verl's reward-loop manager interface; see the module docstring for the configuration."""

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
        **unused: Any,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        settings = reward_kwargs(config)
        self.server_url = settings["server_url"]
        self.group_size = group_size_of(config, settings.get("group_size"))
        check_validation(config, self.group_size)
        self.hold_s = settings.get("hold_s")
        self.timeout = float(settings.get("timeout", 180.0))
        self.api_token = settings.get("api_token")
        self._client: AsyncVigorClient | None = None

    def client(self) -> AsyncVigorClient:
        # Built on first use: httpx binds its pool to the loop run_single is awaited on.
        if self._client is None:
            self._client = AsyncVigorClient(
                self.server_url, api_token=self.api_token, timeout=self.timeout
            )
        return self._client

    async def run_single(self, data: Any) -> dict[str, Any]:
        item = data[-1:][0]  # multi-turn rows: the last sequence, as verl's own managers do
        uid = item.non_tensor_batch.get("uid")
        if uid is None:
            raise KeyError(
                "this sample has no 'uid' in non_tensor_batch: VigorRewardManager ranks a "
                "sample within its uid group (verl's RayPPOTrainer sets it)"
            )
        prompt_ids, completion_ids = sample_ids(item)
        group = Group(
            id=str(uid),
            group_size=self.group_size,
            prompt_ids=prompt_ids,
            completion_ids=[completion_ids],
            # One id per call, kept across the client's retries: a retry never counts twice,
            # and two identical completions of one uid stay two samples.
            sample_ids=[uuid.uuid4().hex],
            hold_s=self.hold_s,
        )
        result = await self.client().score([group], shaping="rank")
        g = result.groups[0]
        if g.rewards[0] is None:
            raise RuntimeError(
                f"uid {uid}: no VIGOR reward ({g.reasons[0]}): its group did not reach "
                f"{self.group_size} samples at {self.server_url} within the hold time; check "
                "rollout.n (or reward_kwargs.group_size) and that every reward-loop worker "
                "uses the same server"
            )
        score = g.scores[0]
        floor = stand_in_floor(g.scores)
        return {
            "reward_score": g.rewards[0],
            "reward_extra_info": {
                "vigor_score": score if score is not None else floor,
                "vigor_unscored": 0.0 if score is not None else 1.0,
                "vigor_grad_norm": g.grad_norms[0] if g.grad_norms[0] is not None else 0.0,
                "vigor_num_tokens": g.num_tokens[0],
                "vigor_weight_version": result.weight_version,
            },
        }


__all__ = ["VigorRewardManager", "check_validation", "group_size_of", "reward_kwargs"]


if __name__ == "__main__":  # `python -m vigor_client.integrations.verl_reward_loop`: this path
    print(os.path.abspath(__file__))
