"""RMSNorm and LayerNorm: weight by ‖Σ_t b_t ⊙ x̂_t‖², bias by ‖Σ_t b_t‖².

x̂ is recomputed exactly as the module computes it, dtype casts included: HF's RMSNorm normalizes
in float32 and casts back, so in a float64 model x̂ carries float32 rounding, and in bfloat16 the
weight multiplies the bf16-rounded x̂. Any other x̂ would be the gradient of a different function.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from ..errors import UnsupportedModelError
from .common import flat, sq_sum, token_mask, tokens
from .registry import CallContext, NormRule, register, register_resolver


class AffineNormRule(NormRule):
    """out = weight ⊙ x̂ (+ bias), with x̂ a function of x alone."""

    param_names = ("weight", "bias")

    def normalized(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def capture(self, module: nn.Module, x: torch.Tensor, ctx: CallContext) -> torch.Tensor:
        return x  # autograd keeps the norm's input anyway; x̂ is recomputed at backward time

    def sq_norms(self, module, x, grad, ctx, scored):
        out = torch.zeros(grad.shape[0], dtype=torch.float64, device=grad.device)
        if "weight" in scored:
            prod = flat(grad, ctx.acc_dtype) * flat(self.normalized(module, x), ctx.acc_dtype)
            if ctx.mask is not None:  # on the product: 0·NaN at a padded position stays NaN
                prod.masked_fill_(~token_mask(ctx.mask, grad).unsqueeze(-1), 0)
            out += sq_sum(prod.sum(dim=1))
        if "bias" in scored and getattr(module, "bias", None) is not None:
            out += sq_sum(tokens(grad, ctx.mask, ctx.acc_dtype).sum(dim=1))
        return out


@register(LlamaRMSNorm, Qwen2RMSNorm)
class HFRMSNormRule(AffineNormRule):
    """HF's RMSNorm (one implementation copied into many model files)."""

    param_names = ("weight",)

    def normalized(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + module.variance_epsilon)
        return h.to(x.dtype)


@functools.cache
def _llama_rmsnorm_source() -> str:
    return inspect.getsource(LlamaRMSNorm.forward)


@register_resolver
def _hf_rmsnorm_copies(module_type: type) -> NormRule | None:
    """Other HF models' RMSNorm classes whose forward is, to the character, Llama's."""
    if not module_type.__name__.endswith("RMSNorm"):
        return None
    try:
        same = inspect.getsource(module_type.forward) == _llama_rmsnorm_source()
    except (OSError, TypeError):
        return None
    return HFRMSNormRule() if same else None


@register(nn.RMSNorm)
class TorchRMSNormRule(AffineNormRule):
    param_names = ("weight",)

    def normalized(self, module: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, module.normalized_shape, None, module.eps)

    def check(self, module: nn.RMSNorm) -> None:
        _one_normalized_dim(module)


@register(nn.LayerNorm)
class LayerNormRule(AffineNormRule):
    def normalized(self, module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)

    def check(self, module: nn.LayerNorm) -> None:
        _one_normalized_dim(module)


def _one_normalized_dim(module: nn.Module) -> None:
    if len(module.normalized_shape) != 1:
        raise UnsupportedModelError(
            f"{type(module).__name__} over {len(module.normalized_shape)} dims has no norm rule"
        )
