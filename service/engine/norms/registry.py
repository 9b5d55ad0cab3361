"""The table of norm rules keyed by module type, and the plan that maps scored parameters to rules.

A rule sees one call of one module: at forward time it keeps what it needs from the input
(`capture`), at backward time it turns the output gradient into per-sample squared norms of the
module's own scored parameters (`sq_norms`). A parameter shared by two modules (tied embedding and
lm_head) also needs a tied rule for the cross term. Planning fails loudly for anything without a
rule: a norm over a subset of the scored parameters would be a wrong number, not an approximation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError
from .gram import GramCache


@dataclass
class CallContext:
    """What a rule needs besides the module: where the padding is and how to compute."""

    mask: torch.Tensor | None  # bool (batch, positions), True at real tokens; None: no padding
    acc_dtype: torch.dtype  # float32 or float64: Grams and sums never run in half precision
    grams: GramCache  # A-Grams shared by modules reading the same input (q/k/v, gate/up)
    force_form: str  # "auto", "ghost" or "direct" (tests force each form of the Linear rule)
    # Zero padding on both sides of every product. Off, a side may skip it where the other side
    # is already zeroed: finite padding values then cannot matter, and non-finite ones turn the
    # sample's result into NaN, which the engine detects and recomputes strictly.
    strict: bool = False


class NormRule:
    """Per-sample squared gradient norms of one module type's parameters."""

    param_names: tuple[str, ...] = ()

    def check(self, module: nn.Module) -> None:
        """Raise UnsupportedModelError for a configuration the maths below does not cover."""

    def capture(self, module: nn.Module, x: torch.Tensor, ctx: CallContext) -> Any:
        raise NotImplementedError

    def sq_norms(
        self,
        module: nn.Module,
        saved: Any,
        grad: torch.Tensor,
        ctx: CallContext,
        scored: frozenset[str],
    ) -> torch.Tensor:
        """(batch,) float64 squared norms over the `scored` parameter names of this module."""
        raise NotImplementedError

    def column_slice(self, module, saved, grad, start: int, ctx: CallContext, scored):
        """The terms of output columns start..start+grad.shape[-1] (the chunked lm_head).

        Every exact term of a linear layer is a sum over output columns; a rule whose result is
        not (the sketch) collects the slices and answers in `columns_done`.
        """
        return self.sq_norms(module, saved, grad, ctx, scored)

    def columns_done(self, module, saved, ctx: CallContext, scored) -> torch.Tensor | None:
        """What is left once every column slice has arrived; None: nothing."""
        return None


class TiedRule:
    """Cross term 2·⟨G_a, G_b⟩ of one parameter shared by two modules, for one micro-batch.

    The capture machinery forwards each member's input and output gradient here; `backward`
    returns the (batch,) cross contribution once both members' gradients have arrived.
    """

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules

    @staticmethod
    def role(module: nn.Module) -> str:
        raise NotImplementedError

    def forward(self, role: str, x: torch.Tensor, ctx: CallContext) -> None:
        raise NotImplementedError

    def backward(self, role: str, grad: torch.Tensor, ctx: CallContext) -> torch.Tensor | None:
        raise NotImplementedError


_RULES: dict[type, NormRule] = {}
_RESOLVERS: list[Callable[[type], NormRule | None]] = []
_TIED: dict[frozenset[type], type[TiedRule]] = {}


def register(*types: type) -> Callable[[type[NormRule]], type[NormRule]]:
    """Class decorator: one rule instance serves every listed module type (exact type match)."""

    def wrap(cls: type[NormRule]) -> type[NormRule]:
        rule = cls()
        for t in types:
            _RULES[t] = rule
        return cls

    return wrap


def register_resolver(fn: Callable[[type], NormRule | None]) -> Callable[[type], NormRule | None]:
    """For families of look-alike classes (HF's many copies of one RMSNorm) found by inspection."""
    _RESOLVERS.append(fn)
    return fn


def register_tied(*types: type) -> Callable[[type[TiedRule]], type[TiedRule]]:
    def wrap(cls: type[TiedRule]) -> type[TiedRule]:
        _TIED[frozenset(types)] = cls
        return cls

    return wrap


def rule_for(module: nn.Module) -> NormRule | None:
    # Exact types only: a subclass may override forward, and a rule for the parent would then
    # compute the norm of a different function.
    t = type(module)
    if t in _RULES:
        return _RULES[t]
    for resolve in _RESOLVERS:
        rule = resolve(t)
        if rule is not None:
            _RULES[t] = rule
            return rule
    return None


@dataclass
class ModulePlan:
    name: str
    module: nn.Module
    rule: NormRule
    scored: frozenset[str]


@dataclass
class TiedPlan:
    param_name: str
    rule_cls: type[TiedRule]
    modules: dict[str, nn.Module]  # role -> module


@dataclass
class Plan:
    """Every scored parameter accounted for: module rules plus cross terms of tied parameters."""

    modules: list[ModulePlan] = field(default_factory=list)
    tied: list[TiedPlan] = field(default_factory=list)


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod_name, module, p_name))
    return owners


def _describe(mod_name: str, module: nn.Module, p_name: str) -> str:
    full = f"{mod_name}.{p_name}" if mod_name else p_name
    return f"parameter {full!r} of module type {type(module).__module__}.{type(module).__name__}"


def plan_norms(model: nn.Module, params: list[torch.nn.Parameter]) -> Plan:
    """Map each scored parameter to the rule(s) that compute its per-sample norm, or refuse."""
    owners = _owners(model)
    scored_by_module: dict[int, tuple[str, nn.Module, set[str]]] = {}
    plan = Plan()
    for p in params:
        found = owners.get(id(p))
        if not found:
            raise UnsupportedModelError("a scored parameter is not a parameter of the model")
        for mod_name, module, p_name in found:
            rule = rule_for(module)
            if rule is None or p_name not in rule.param_names:
                raise UnsupportedModelError(
                    f"no per-sample norm rule for {_describe(mod_name, module, p_name)}; "
                    "use the loop engine for this model"
                )
            rule.check(module)
            scored_by_module.setdefault(id(module), (mod_name, module, set()))[2].add(p_name)
        if len(found) > 1:
            plan.tied.append(_tied_plan(found))
    for mod_name, module, names in scored_by_module.values():
        plan.modules.append(ModulePlan(mod_name, module, rule_for(module), frozenset(names)))
    return plan


def _tied_plan(found: list[tuple[str, nn.Module, str]]) -> TiedPlan:
    described = ", ".join(_describe(*f) for f in found)
    if len(found) != 2:
        raise UnsupportedModelError(f"a parameter is shared by {len(found)} modules: {described}")
    types = frozenset(type(m) for _, m, _ in found)
    rule_cls = _TIED.get(types)
    if rule_cls is None or any(p_name != "weight" for _, _, p_name in found):
        raise UnsupportedModelError(f"no cross-term rule for the tied {described}")
    modules = {rule_cls.role(m): m for _, m, _ in found}
    return TiedPlan(found[0][2], rule_cls, modules)


def check_supported(model: nn.Module, params: list[torch.nn.Parameter]) -> None:
    """Raise UnsupportedModelError unless the batched engine covers every scored parameter."""
    plan_norms(model, params)
