"""TRL GRPOTrainer integration: a reward function and a weight-sync callback.

    from vigor_client.integrations.trl import vigor_for_trl

    reward_fn, sync = vigor_for_trl("http://127.0.0.1:8000", tokenizer=tokenizer)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], callbacks=[sync], ...)

The callback pushes the policy's trainable weights (the LoRA adapter alone for peft models) after
every optimizer step with weight version = global step; the reward function asks the server for
`min_weight_version = global step`, so each completion is scored on the weights that sampled it.

TRL calls a reward function with `prompts, completions, completion_ids, trainer_state,
log_extra, log_metric` and the dataset's other columns, and one call holds this process's slice
of the batch with each prompt's `num_generations` completions next to each other.
"""

from __future__ import annotations

from typing import Any

from ..weights import VersionClock
from .callback import VigorWeightSyncCallback
from .reward import AsyncVigorRewardFunction, RewardCall, VigorRewardFunction


def vigor_for_trl(
    server: Any = "http://127.0.0.1:8000",
    *,
    tokenizer: Any = None,
    checkpoints_dir: str | None = None,
    push_on_train_begin: bool = False,
    asynchronous: bool = False,
    **reward_options: Any,
) -> tuple[VigorRewardFunction | AsyncVigorRewardFunction, VigorWeightSyncCallback]:
    """The reward function and the weight-sync callback, sharing one version clock.

    `server`: a URL, several (list or comma-separated), or a client. `reward_options` go to the
    reward function (signals, shaping, num_generations, on_error, wait_s, ...).
    """
    clock = VersionClock()
    sync = VigorWeightSyncCallback(
        server,
        checkpoints_dir=checkpoints_dir,
        clock=clock,
        push_on_train_begin=push_on_train_begin,
    )
    cls = AsyncVigorRewardFunction if asynchronous else VigorRewardFunction
    reward = cls(server, tokenizer=tokenizer, clock=clock, **reward_options)
    return reward, sync


__all__ = [
    "AsyncVigorRewardFunction",
    "RewardCall",
    "VersionClock",
    "VigorRewardFunction",
    "VigorWeightSyncCallback",
    "vigor_for_trl",
]
