"""Checking incoming tensors against what the served model holds, naming the tensor at fault.

Everything here runs off the engine worker on copies: nothing touches the served weights, so a
refused update leaves them exactly as they were.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from ..errors import WeightsRejectedError

# peft renames the modules it wraps; these map a wrapped model's names back to the base names.
_PEFT_WRAPPERS = (".base_layer", ".original_module")
_PEFT_OWN = ("lora_", ".modules_to_save.")


@dataclass(frozen=True)
class Target:
    """One tensor of the served model; `aliases` are every name it is known by (tied weights)."""

    name: str
    tensor: torch.Tensor
    aliases: tuple[str, ...]


class TargetMap:
    """Name → served tensor, where tied tensors (embedding and lm_head) are one target."""

    def __init__(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        groups: dict[int, list[tuple[str, torch.Tensor]]] = {}
        for name, tensor in named:
            groups.setdefault(id(tensor), []).append((name, tensor))
        self.targets: dict[str, Target] = {}
        self.by_alias: dict[str, Target] = {}
        for members in groups.values():
            names = tuple(n for n, _ in members)
            target = Target(names[0], members[0][1], names)
            self.targets[target.name] = target
            for alias in names:
                self.by_alias[alias] = target

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> TargetMap:
        """The base weights of `model`, by their Hugging Face names, even under a peft wrapper."""
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        named = []
        for name, tensor in model.state_dict(keep_vars=True).items():
            if any(own in name for own in _PEFT_OWN):
                continue
            for wrapper in _PEFT_WRAPPERS:
                name = name.replace(wrapper, "")
            named.append((name, tensor))
        return cls(named)

    def __len__(self) -> int:
        return len(self.targets)

    def get(self, name: str) -> Target | None:
        return self.by_alias.get(name)

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.by_alias, n=1, cutoff=0.8)
        return f" (did you mean {close[0]!r}?)" if close else ""


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return str(list(shape))


def dtype_problem(got: torch.dtype, want: torch.dtype, allow_cast: bool) -> str | None:
    if got == want:
        return None
    if allow_cast and got.is_floating_point and want.is_floating_point:
        return None
    hint = " (cast it first, or pass allow_cast)" if got.is_floating_point else ""
    return f"dtype {_dtype(got)} does not match the served {_dtype(want)}{hint}"


def nonfinite_problem(tensor: torch.Tensor) -> str | None:
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    # Fast path: one reduction pass (isfinite costs several). A NaN or Inf always makes the sum
    # non-finite; a finite tensor whose sum overflows merely takes the exact path below.
    wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    if tensor.is_floating_point() and bool(torch.isfinite(tensor.sum(dtype=wide))):
        return None
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return None
    nan = int(torch.isnan(tensor).sum())
    inf = tensor.numel() - int(finite.sum()) - nan
    return f"holds {nan} NaN and {inf} Inf values of {tensor.numel()}"


class Checked:
    """Validated tensors keyed by target name, ready to copy into the served model."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.given: dict[str, str] = {}  # target name → the name it arrived under

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)


def check_tensors(
    targets: TargetMap,
    incoming: Mapping[str, torch.Tensor],
    *,
    allow_cast: bool = False,
    into: Checked | None = None,
    where: str = "",
) -> Checked:
    """Validate every incoming tensor; raise WeightsRejectedError listing each problem.

    `into` accumulates across buckets of one push: a tensor given twice (or both names of a tied
    pair) must carry identical values.
    """
    out = into if into is not None else Checked()
    problems: list[str] = []
    added: dict[str, torch.Tensor] = {}
    prefix = f"{where}: " if where else ""
    for name, tensor in incoming.items():
        target = targets.get(name)
        label = f"{prefix}tensor {name!r}"
        if target is None:
            hint = targets.suggest(name)
            problems.append(f"{label} is not a parameter of the served model{hint}")
            continue
        want = target.tensor
        if tuple(tensor.shape) != tuple(want.shape):
            problems.append(
                f"{label} has shape {_shape(tensor.shape)}, the served one {_shape(want.shape)}"
            )
            continue
        why = dtype_problem(tensor.dtype, want.dtype, allow_cast)
        if why is None:
            why = nonfinite_problem(tensor)
        if why is None and tensor.dtype != want.dtype:
            tensor = tensor.to(want.dtype)
            why = nonfinite_problem(tensor)  # a narrowing cast can overflow to Inf
            why = why and f"{why} after the cast to {_dtype(want.dtype)}"
        if why is not None:
            problems.append(f"{label}: {why}")
            continue
        seen = added.get(target.name, out.tensors.get(target.name))
        if seen is not None:
            first = out.given.get(target.name) or name
            if not torch.equal(seen, tensor):
                problems.append(
                    f"{label} and {first!r} are the same (tied) parameter but differ in value"
                )
            continue
        added[target.name] = tensor
        out.given.setdefault(target.name, name)
    if problems:
        for key in added:
            out.given.pop(key, None)
        raise WeightsRejectedError(problems)
    out.tensors.update(added)
    return out


def check_complete(targets: TargetMap, checked: Checked) -> None:
    """A full update must replace every parameter (a tied pair once, under either name)."""
    missing = [t.name for t in targets.targets.values() if t.name not in checked.tensors]
    if missing:
        listed = ", ".join(repr(m) for m in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise WeightsRejectedError(
            [f"a full update must give every parameter; missing {len(missing)}: {listed}{more}"]
        )


def check_declared(
    targets: TargetMap, declared: Iterable[tuple[str, str, list[int]]], dtypes: Mapping[str, object]
) -> list[str]:
    """Problems with announced (name, dtype name, shape) triples, before any data has arrived.

    `dtypes` maps the accepted dtype names to torch dtypes. The same rules as `check_tensors`
    minus the values: known name, served shape, served dtype (no casts: the sender casts).
    """
    problems = []
    for name, dtype_name, shape in declared:
        label = f"tensor {name!r}"
        target = targets.get(name)
        if target is None:
            problems.append(
                f"{label} is not a parameter of the served model{targets.suggest(name)}"
            )
            continue
        want = target.tensor
        if tuple(shape) != tuple(want.shape):
            problems.append(
                f"{label} has shape {_shape(shape)}, the served one {_shape(want.shape)}"
            )
            continue
        dtype = dtypes.get(dtype_name)
        if not isinstance(dtype, torch.dtype):
            known = ", ".join(sorted(dtypes))
            problems.append(f"{label}: dtype {dtype_name!r} is not one of {known}")
        elif dtype != want.dtype:
            problems.append(
                f"{label}: dtype {_dtype(dtype)} does not match the served {_dtype(want.dtype)} "
                "(cast it before sending)"
            )
    return problems
