"""Which of a reward call's samples belong to which group, when a group spans processes.

GRPOTrainer's sampler puts each prompt's `num_generations` completions next to each other in the
generation batch, shards that batch over processes in rank order, and after the reward calls
gathers the rewards in the same order and ranks them in consecutive blocks of `num_generations`
(`rewards.view(-1, num_generations)`). So sample i of process r is at global position r·n + i
(n samples per process) and in group (r·n + i) // G, whatever the prompts are. TRL only requires
the whole generation batch to split into groups, so a group may lie partly on one process and
partly on the next: each process then holds a piece of it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupPiece:
    """This process's samples of one group of the generation batch."""

    group: int  # the group's number in the generation batch, the same on every process
    samples: list[int]  # indices into this call's lists
    positions: list[int]  # their places in the whole group, 0 .. size-1
    size: int

    @property
    def whole(self) -> bool:
        return len(self.samples) == self.size


def plan_pieces(
    keys: Sequence[Hashable], size: int, rank: int = 0, world_size: int = 1
) -> list[GroupPiece]:
    """The groups this process's `keys` (one per sample, equal for one prompt) belong to.

    Refuses a layout TRL would not produce: a batch that does not split into groups of `size`,
    or a group whose samples on this process do not share one prompt.
    """
    n = len(keys)
    if size <= 0:
        raise ValueError(f"the group size must be positive, not {size}")
    if (n * world_size) % size:
        raise ValueError(
            f"{world_size} process(es) × {n} samples = {n * world_size} do not split into groups "
            f"of {size} (num_generations): the groups cannot be completed"
        )
    start = rank * n
    pieces: dict[int, tuple[list[int], list[int]]] = {}
    for i in range(n):
        group, position = divmod(start + i, size)
        samples, positions = pieces.setdefault(group, ([], []))
        samples.append(i)
        positions.append(position)
    out = [GroupPiece(g, s, p, size) for g, (s, p) in pieces.items()]
    for piece in out:
        first = piece.samples[0]
        if any(keys[i] != keys[first] for i in piece.samples):
            raise ValueError(
                f"samples {first}..{piece.samples[-1]} of process {rank} should share one prompt "
                f"(group {piece.group} of {size}) but do not: is num_generations={size} the "
                "trainer's?"
            )
    return out


def group_key(run_id: str, name: str, call: int, group: int) -> str:
    """The server's key for one group: the same on every process for the same call and group
    (all processes call the reward function once per generation batch), unlike any other run's
    or reward function's."""
    return f"{run_id}/{name}/{call}/{group}"


__all__ = ["GroupPiece", "group_key", "plan_pieces"]
