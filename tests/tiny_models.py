"""Tiny random causal LMs built from configs, for exactness tests (no download needed)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
)

VOCAB = 64


def _build(config, seed: int, dtype: torch.dtype):
    torch.manual_seed(seed)
    # Built and perturbed in float64 then cast, so every dtype holds the same (rounded) weights.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float64)
    # Random init leaves norm weights at exactly 1 and biases at 0; perturb them so every
    # parameter family contributes a non-trivial gradient.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.to(dtype).eval()


# Llama/Qwen2's eager attention takes its softmax in float32 whatever the model's dtype, and the
# float32 sums then depend on the padded row length (7e-8 relative on AVX2 here): SDPA stays in
# float64 all through, so exactness tests see only the engine's own error.
FLOAT64_ATTENTION = "sdpa"


def tiny_llama(tied: bool = False, dtype=torch.float64, seed: int = 0, pad_token_id=None):
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        pad_token_id=pad_token_id,
        attn_implementation=FLOAT64_ATTENTION,
    )
    return _build(config, seed, dtype)


def tiny_qwen2(tied: bool = False, dtype=torch.float64, seed: int = 0, pad_token_id=None):
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        pad_token_id=pad_token_id,
        attn_implementation=FLOAT64_ATTENTION,
    )
    return _build(config, seed, dtype)


def tiny_gpt2(dtype=torch.float64, seed: int = 0, tied: bool = True):
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    return _build(config, seed, dtype)


TINY_MODELS = {
    "llama-untied": lambda **kw: tiny_llama(tied=False, **kw),
    "llama-tied": lambda **kw: tiny_llama(tied=True, **kw),
    "qwen2-untied": lambda **kw: tiny_qwen2(tied=False, **kw),
    "qwen2-tied": lambda **kw: tiny_qwen2(tied=True, **kw),
}


def tiny_lora_llama(tied: bool = True, dtype=torch.float64, seed: int = 0, target_modules=None):
    """A tiny Llama wrapped by peft LoRA; A and B non-zero so every LoRA weight has a gradient."""
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(tied=tied, dtype=dtype, seed=seed)
    targets = target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def random_groups(seed: int, prompt_lens=(5, 3), completion_lens=((4, 7, 0, 1), (6,))):
    """Ragged groups of (prompt_ids, [completion_ids...]) with an empty completion and G = 1."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for plen, clens in zip(prompt_lens, completion_lens, strict=True):
        prompt = torch.randint(0, VOCAB, (plen,), generator=gen).tolist()
        comps = [torch.randint(0, VOCAB, (c,), generator=gen).tolist() for c in clens]
        groups.append((prompt, comps))
    return groups


def tiny_llama_for(tokenizer, dtype=torch.float32, seed: int = 0):
    """A tiny random Llama over a real tokenizer's vocabulary (tied embeddings keep it small),
    so a trainer can generate text with that tokenizer."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=FLOAT64_ATTENTION,
    )
    return _build(config, seed, dtype)
