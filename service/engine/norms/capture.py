"""Hooks that feed module inputs and output gradients to the norm rules, and nothing else.

Forward hooks keep what each rule needs from the input and put a tensor hook on the output;
the tensor hook turns the output gradient into per-sample squared norms at once, so no gradient
outlives its module's step of the backward pass. Results live in a NormCapture owned by the
caller; the hooks are removed on exit whatever happens, and nothing is stored on the model.

Checkpointing: a reentrant checkpoint runs the first forward under no_grad (skipped here) and
recomputes under grad during backward (captured: its outputs are the ones on the graph). A
non-reentrant checkpoint runs the first forward under grad (captured) and recomputes during
backward (skipped: its outputs never receive a gradient). Hence the rule: during backward, a
module is captured only if the forward phase did not capture it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from ..types import Sketch
from .gram import GramCache
from .linear import LinearLikeRule, LinearRule
from .registry import CallContext, ModulePlan, Plan, TiedRule
from .sketch import Projections, SketchLinearRule


@dataclass
class _Entry:
    plan: ModulePlan
    tied: list[tuple[int, str]] = field(default_factory=list)  # (index into tied rules, role)
    forward_calls: int = 0
    backward_calls: int = 0
    driven: bool = False  # hooks skip it: the chunked head calls drive_* itself


@dataclass
class _Call:
    entry: _Entry
    saved: Any
    ctx: CallContext
    done: bool = False


class NormCapture:
    """Per-sample squared norms of one micro-batch, accumulated by the hooks."""

    def __init__(
        self,
        plan: Plan,
        force_form: str = "auto",
        sketch: Sketch | None = None,
        projections: Projections | None = None,
    ):
        self._plan = plan
        self._force_form = force_form
        tied = {id(m) for tp in plan.tied for m in tp.modules.values()}
        self._entries = {
            id(mp.module): _Entry(_estimated(mp, sketch, projections, id(mp.module) in tied))
            for mp in plan.modules
        }
        for k, tp in enumerate(plan.tied):
            for role, module in tp.modules.items():
                self._entries[id(module)].tied.append((k, role))
        self._grams = GramCache()
        self._tied: list[TiedRule] = []
        self._masks: dict[tuple[int, int], torch.Tensor | None] = {}
        self._acc_dtype = torch.float32
        self._sq: torch.Tensor | None = None
        self._in_backward = False
        self._strict = False

    def start(
        self,
        masks: dict[tuple[int, int], torch.Tensor | None],
        acc_dtype: torch.dtype,
        device: torch.device,
        strict: bool = False,
    ) -> None:
        """Begin a micro-batch. `masks` maps an input's leading (batch, positions) to its mask."""
        batch = next(iter(masks))[0]
        self._masks = masks
        self._acc_dtype = acc_dtype
        self._strict = strict
        self._sq = torch.zeros(batch, dtype=torch.float64, device=device)
        self._tied = [tp.rule_cls(tp.modules) for tp in self._plan.tied]
        for entry in self._entries.values():
            entry.forward_calls = entry.backward_calls = 0

    @contextlib.contextmanager
    def backward_phase(self) -> Iterator[None]:
        self._in_backward = True
        try:
            yield
        finally:
            self._in_backward = False

    def finish(self) -> torch.Tensor:
        """The micro-batch's (batch,) float64 squared norms; forgets everything else."""
        sq, self._sq = self._sq, None
        self._grams.clear()
        self._tied = []
        self._masks = {}
        return sq

    def _context(self, module: nn.Module, x: torch.Tensor) -> CallContext:
        key = tuple(x.shape[:2])
        if x.dim() < 2 or key not in self._masks:
            raise UnsupportedModelError(
                f"{type(module).__name__} received an input of shape {tuple(x.shape)}; the norm "
                f"rules expect (batch, positions, ...), (batch, positions) in {list(self._masks)}"
            )
        mask = self._masks[key]
        return CallContext(mask, self._acc_dtype, self._grams, self._force_form, self._strict)

    def can_drive(self, module: nn.Module) -> bool:
        """Whether `drive_*` can take this Linear's output gradient in column slices."""
        entry = self._entries.get(id(module))
        if entry is None:
            return True  # no scored parameter: nothing to capture
        rule = entry.plan.rule
        linear = isinstance(rule, LinearRule) or (
            isinstance(rule, SketchLinearRule) and isinstance(rule.exact, LinearRule)
        )
        return linear and all(
            hasattr(self._plan.tied[k].rule_cls, "head_chunk") for k, _ in entry.tied
        )

    @contextlib.contextmanager
    def driving(self, module: nn.Module) -> Iterator[None]:
        """The hooks leave `module` alone for the duration; its caller drives the capture."""
        entry = self._entries.get(id(module))
        if entry is not None:
            entry.driven = True
        try:
            yield
        finally:
            if entry is not None:
                entry.driven = False

    def drive_forward(self, module: nn.Module, x: torch.Tensor) -> _Call | None:
        """What the forward hook does for a driven module, given its input."""
        entry = self._entries.get(id(module))
        if entry is None or self._sq is None:
            return None
        entry.forward_calls += 1
        if entry.forward_calls > 1:
            raise UnsupportedModelError(f"{entry.plan.name!r} ran more than once in one forward")
        ctx = self._context(module, x)
        with torch.no_grad():
            saved = entry.plan.rule.capture(module, x, ctx)
            for k, role in entry.tied:
                self._tied[k].forward(role, x, ctx)
        return _Call(entry, saved, ctx)

    def drive_grad(self, call: _Call | None, module: nn.Module, grad: torch.Tensor, start: int):
        """Add the norm terms of output columns start..start+grad.shape[-1] of a driven module."""
        if call is None:
            return
        with torch.no_grad():
            self._sq += call.entry.plan.rule.column_slice(
                module, call.saved, grad, start, call.ctx, call.entry.plan.scored
            )
            for k, role in call.entry.tied:
                self._tied[k].head_chunk(role, grad, start, call.ctx)

    def drive_done(self, call: _Call | None, module: nn.Module) -> None:
        """Every column slice has arrived: the tied cross terms can be completed."""
        if call is None:
            return
        with torch.no_grad():
            rest = call.entry.plan.rule.columns_done(
                module, call.saved, call.ctx, call.entry.plan.scored
            )
            if rest is not None:
                self._sq += rest
            for k, role in call.entry.tied:
                cross = self._tied[k].head_done(role, call.ctx)
                if cross is not None:
                    self._sq += cross
        call.done, call.saved = True, None

    def forward_hook(self, entry: _Entry, module: nn.Module, inputs: tuple, output: Any) -> Any:
        if self._sq is None or not torch.is_grad_enabled() or entry.driven:
            return None
        if self._in_backward:
            if entry.forward_calls:
                return None
            entry.backward_calls += 1
            calls = entry.backward_calls
        else:
            entry.forward_calls += 1
            calls = entry.forward_calls
        if calls > 1:
            raise UnsupportedModelError(
                f"{entry.plan.name!r} ({type(module).__name__}) ran more than once in one forward "
                "pass; its per-sample norm would need cross terms between the calls"
            )
        if not inputs or not isinstance(output, torch.Tensor):
            raise UnsupportedModelError(
                f"{entry.plan.name!r} ({type(module).__name__}) must take its input positionally "
                "and return one tensor for its norm to be captured"
            )
        x = inputs[0]
        ctx = self._context(module, x)
        with torch.no_grad():
            saved = entry.plan.rule.capture(module, x, ctx)
            for k, role in entry.tied:
                self._tied[k].forward(role, x, ctx)
        replaced = None
        if not output.requires_grad:
            # Frozen parameters and an input without grad (the embeddings): make the output a
            # leaf so that the gradient reaching it exists.
            output = replaced = output.detach().requires_grad_()
        output.register_hook(partial(self._on_grad, _Call(entry, saved, ctx), module))
        return replaced

    def _on_grad(self, call: _Call, module: nn.Module, grad: torch.Tensor) -> None:
        if call.done:
            raise RuntimeError(f"gradient of {call.entry.plan.name!r} arrived twice")
        with torch.no_grad():
            self._sq += call.entry.plan.rule.sq_norms(
                module, call.saved, grad, call.ctx, call.entry.plan.scored
            )
            for k, role in call.entry.tied:
                cross = self._tied[k].backward(role, grad, call.ctx)
                if cross is not None:
                    self._sq += cross
        call.done, call.saved = True, None  # free the Gram or input now, not after the backward


def _estimated(
    mp: ModulePlan, sketch: Sketch | None, projections: Projections | None, tied: bool
) -> ModulePlan:
    """The plan entry with the sketch rule in place of a Linear weight's exact one.

    Only untied Linear-like weights: embeddings, norms and biases are cheap and stay exact, and
    a tied weight's cross term needs the exact head gradient.
    """
    linear_weight = isinstance(mp.rule, LinearLikeRule) and "weight" in mp.scored
    if sketch is None or tied or not linear_weight:
        return mp
    rule = SketchLinearRule(mp.rule, mp.name, sketch, projections or Projections())
    return ModulePlan(mp.name, mp.module, rule, mp.scored)


@contextlib.contextmanager
def capturing(
    model: nn.Module,
    plan: Plan,
    force_form: str = "auto",
    sketch: Sketch | None = None,
    projections: Projections | None = None,
) -> Iterator[NormCapture]:
    """Hooks on every module owning a scored parameter, for the duration only."""
    capture = NormCapture(plan, force_form, sketch, projections)
    handles = []
    try:
        for mp in plan.modules:
            hook = partial(capture.forward_hook, capture._entries[id(mp.module)])
            handles.append(mp.module.register_forward_hook(hook))
        yield capture
    finally:
        for h in handles:
            h.remove()
        capture.finish()
