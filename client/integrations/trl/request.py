"""One TRL reward call's samples as a scoring request: whole groups, or this process's pieces.

On one process, or when every group of the call lies on this process, the groups go whole. When
a group spans processes, every group of the call carries its key, the whole group's size and each
sample's place in it (`id`, `group_size`, `sample_ids`): the server holds the pieces that the
processes send until each group is whole, ranks it, and answers each process its own rows. (The
server takes a request's groups all held or all whole, hence all of them.) A retried piece takes
over its own slots, by sample id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...schema import Group
from ..grouping import contiguous_runs, freeze
from .pieces import group_key, plan_pieces
from .prompts import completion_text, prompt_form
from .run import TrainerRun, process_layout


@dataclass
class ScoringRequest:
    groups: list[Group]
    runs: list[list[int]]  # each group's sample indices in the call's lists
    options: dict[str, Any]  # keyword options of `score`
    held: bool  # the groups carry group_size: the server assembles them across processes
    step: int | None
    rank: int


@dataclass(frozen=True)
class RequestSettings:
    tokenizer: Any
    chat_template_kwargs: dict
    num_generations: int | None
    shaping: str
    signals: tuple[str, ...]
    pin_weights: bool
    wait_s: float
    hold_s: float | None
    name: str
    estimator: dict | None = None  # {"kind": "sketch", "k": ..., "seed": ...}; None: the server's


def _group_size(settings: RequestSettings, run: TrainerRun, world_size: int) -> int | None:
    if settings.num_generations:
        return settings.num_generations
    size = run.group_size()
    if world_size > 1 and size is None:
        raise ValueError(
            f"a reward call on {world_size} processes needs the group size: pass "
            "num_generations= (the trainer's) or the weight-sync callback, which reads it"
        )
    # None: one process without the callback; TRL keeps a prompt's completions together.
    return size


def build_request(
    settings: RequestSettings,
    run: TrainerRun,
    call: int,
    prompts: list,
    completions: list,
    completion_ids: list | None,
    trainer_state: Any,
) -> ScoringRequest:
    """The request for call number `call` of this reward function (counted on every process)."""
    n = len(prompts)
    if len(completions) != n or (completion_ids is not None and len(completion_ids) != n):
        raise ValueError("prompts, completions and completion_ids differ in length")
    rank, world_size = process_layout()
    if world_size > 1 and not run.agreed:
        raise ValueError(
            f"a VIGOR reward call on {world_size} processes before the weight-sync callback's "
            "on_train_begin: add the callback that vigor_for_trl returns to the trainer's "
            "callbacks (it agrees the weight versions and group keys across processes)"
        )
    keys = [freeze(p) for p in prompts]
    size = _group_size(settings, run, world_size)
    pieces = plan_pieces(keys, size, rank, world_size) if size else None
    runs = [p.samples for p in pieces] if pieces else contiguous_runs(keys)
    held = pieces is not None and not all(p.whole for p in pieces)
    groups = []
    for k, samples in enumerate(runs):
        form = prompt_form(prompts[samples[0]], settings.tokenizer, settings.chat_template_kwargs)
        if completion_ids is not None:  # the generated ids, verbatim: no retokenization
            form["completion_ids"] = [[int(t) for t in completion_ids[i]] for i in samples]
        else:
            form["completions"] = [completion_text(completions[i]) for i in samples]
        if held:
            piece = pieces[k]
            form["id"] = group_key(str(run.run_id), settings.name, call, piece.group)
            form["group_size"] = piece.size
            form["sample_ids"] = [str(p) for p in piece.positions]
            if settings.hold_s is not None:
                form["hold_s"] = settings.hold_s
        groups.append(Group(**form))
    options: dict[str, Any] = {"shaping": settings.shaping, "signals": list(settings.signals)}
    if settings.estimator is not None:
        options["estimator"] = settings.estimator
    step = getattr(trainer_state, "global_step", None)
    if settings.pin_weights and step is not None:
        options["min_weight_version"] = run.clock.version_for(step)
        options["wait_s"] = settings.wait_s
    return ScoringRequest(groups, runs, options, held, step, rank)


__all__ = ["RequestSettings", "ScoringRequest", "build_request"]
