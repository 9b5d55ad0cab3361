"""TRL GRPOTrainer integration: a reward function and a weight-sync callback.

    from vigor_client.integrations.trl import vigor_for_trl

    reward_fn, sync = vigor_for_trl("http://127.0.0.1:8000", tokenizer=tokenizer)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], callbacks=[sync], ...)

The reward function asks the server for `min_weight_version = global step` (plus an offset
agreed at train start), so each completion is scored on the weights that sampled it, and before
scoring has the callback send the policy's trainable weights (the LoRA adapter alone for peft
models) when they changed since the last send. On several processes the pieces of a group that
the processes hold are assembled by the server, so every reward is the whole group's rank.

- `reward.py`: the reward functions; `request.py`, `pieces.py`: their requests, whole groups or
  pieces of groups; `results.py`: the answer, its checks and logged metrics.
- `callback.py`: the weight-sync callback (over HTTP, or a process group: `../group_sync.py`);
  `run.py`: what it shares with the reward functions (version clock, run key, process layout);
  `sharding.py`: refusing ZeRO-3 / FSDP.
"""

from __future__ import annotations

from typing import Any

from ..weights import VersionClock
from .callback import VigorWeightSyncCallback
from .results import GroupIncompleteError, RewardCall
from .reward import AsyncVigorRewardFunction, VigorRewardFunction
from .run import TrainerRun


def vigor_for_trl(
    server: Any = "http://127.0.0.1:8000",
    *,
    tokenizer: Any = None,
    checkpoints_dir: str | None = None,
    push_on_train_begin: bool = False,
    asynchronous: bool = False,
    client_options: dict | None = None,
    push_kwargs: dict | None = None,
    distributed: bool | dict = False,
    **reward_options: Any,
) -> tuple[VigorRewardFunction | AsyncVigorRewardFunction, VigorWeightSyncCallback]:
    """The reward function and the weight-sync callback, sharing one `TrainerRun`.

    `server`: a URL, several (list or comma-separated), or a client. `client_options` configure
    the clients built from a URL (`retry=RetryPolicy(...)` or a number of retries, `timeout`,
    `timeout_margin_s`, `api_token`, `admin_token`, `cooldown_s`); `push_kwargs` go to
    `push_weights` (`bucket_bytes`, ...). `distributed=True` (or a dict of `WeightSender`
    options) sends the weights over a process group with the servers, HTTP when it cannot form.
    `reward_options` go to the reward function (signals,
    shaping, num_generations, on_error, wait_s, hold_s, ...).
    """
    run = TrainerRun()
    sync = VigorWeightSyncCallback(
        server,
        checkpoints_dir=checkpoints_dir,
        run=run,
        push_on_train_begin=push_on_train_begin,
        push_kwargs=push_kwargs,
        client_options=client_options,
        distributed=distributed,
    )
    cls = AsyncVigorRewardFunction if asynchronous else VigorRewardFunction
    reward = cls(
        server, tokenizer=tokenizer, run=run, client_options=client_options, **reward_options
    )
    return reward, sync


__all__ = [
    "AsyncVigorRewardFunction",
    "GroupIncompleteError",
    "RewardCall",
    "TrainerRun",
    "VersionClock",
    "VigorRewardFunction",
    "VigorWeightSyncCallback",
    "vigor_for_trl",
]
