"""What a TRL prompt and completion become on the wire."""

from __future__ import annotations

from typing import Any


def messages(prompt: list[dict]) -> list[dict[str, str]]:
    out = []
    for k, m in enumerate(prompt):
        if not isinstance(m.get("content"), str):
            raise ValueError(
                f"message {k} has non-text content; pass tokenizer= so prompts go as token ids"
            )
        out.append({"role": m["role"], "content": m["content"]})
    return out


def completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(
        m.get("content") or "" for m in completion
    )  # conversational: [{"role", "content"}]


def prompt_form(prompt: Any, tokenizer: Any, chat_template_kwargs: dict) -> dict[str, Any]:
    """The prompt as the exact ids GRPOTrainer generated from, or as text / messages."""
    conversational = isinstance(prompt, list)
    if tokenizer is None:
        return {"messages": messages(prompt)} if conversational else {"prompt": prompt}
    if conversational:  # exactly what GRPOTrainer._tokenize_prompts feeds generate()
        ids = tokenizer.apply_chat_template(
            prompt,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **chat_template_kwargs,
        )["input_ids"]
    else:
        ids = tokenizer(text=prompt)["input_ids"]
    return {"prompt_ids": [int(t) for t in ids]}
