"""What the reward functions of one training process share with its weight-sync callback.

The callback fills it at train start, on every process, with one agreement broadcast from
process 0: the version clock's offset (so every process asks for the same weight version at the
same step) and a run key (so the pieces of a group that two processes send the server carry one
group key, unlike any other run's). It also records the process layout and TRL's group sizes,
which a reward call cannot see, and how to bring the server to a step's weights.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..weights import VersionClock


def process_layout() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed's, or (0, 1) when it is not running.

    TRL's processes are accelerate's, whose index is torch.distributed's rank on CPU and GPU;
    `_calculate_rewards` gathers the rewards in that order.
    """
    dist = sys.modules.get("torch.distributed")  # never imports torch for a torch-free caller
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def broadcast_from_first(value: Any) -> Any:
    """Process 0's `value` on every process (a collective: every process must call it)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass
class TrainerRun:
    """Shared by `vigor_for_trl`'s reward function and callback (one per process).

    `agreed` turns true when the callback has run `on_train_begin`: until then a reward call
    on several processes refuses, since its version and group keys could differ between them.
    `weights_for(step)` (set by the callback) makes the server hold the weights of `step`
    before a call scores completions sampled at that step.
    """

    clock: VersionClock = field(default_factory=VersionClock)
    run_id: str | None = None
    rank: int = 0
    world_size: int = 1
    num_generations: int | None = None
    num_generations_eval: int | None = None
    model: Any = None
    agreed: bool = False
    weights_for: Callable[[int], Any] | None = None

    def group_size(self) -> int | None:
        """The group size TRL uses now: `num_generations_eval` while the model is in eval mode,
        as GRPOTrainer decides (`mode = "train" if self.model.training else "eval"`)."""
        evaluating = self.model is not None and not getattr(self.model, "training", True)
        if evaluating and self.num_generations_eval:
            return self.num_generations_eval
        return self.num_generations


__all__ = ["TrainerRun", "broadcast_from_first", "process_layout"]
