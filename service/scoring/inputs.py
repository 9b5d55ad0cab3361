"""Turning validated request groups into token sequences, or naming every problem found.

Text prompts are tokenized with the tokenizer's own special tokens; `messages` go through the
chat template with the generation prompt; completion text gets no special tokens and nothing
appended; token ids are used verbatim. Every problem is reported with its JSON path.
"""

from __future__ import annotations

from typing import Any

from vigor_client.schema import Group

from ..engine.types import TokenSequence
from ..errors import InputProblem, InvalidInputError


class Tokenization:
    """The tokenizer and the bounds a request must respect."""

    def __init__(self, tokenizer: Any | None, vocab_size: int, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_length = max_length

    def _need_tokenizer(self, loc: str, problems: list[InputProblem]) -> bool:
        if self.tokenizer is None:
            problems.append(
                InputProblem(loc, "this model has no tokenizer: send prompt_ids / completion_ids")
            )
            return False
        return True

    def _encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def prompt_ids(self, group: Group, loc: str, problems: list[InputProblem]) -> list[int] | None:
        if group.prompt_ids is not None:
            ids, where = list(group.prompt_ids), f"{loc}.prompt_ids"
        elif group.prompt is not None:
            where = f"{loc}.prompt"
            if not self._need_tokenizer(where, problems):
                return None
            ids = self._encode(group.prompt, special=True)
        else:
            where = f"{loc}.messages"
            if not self._need_tokenizer(where, problems):
                return None
            if getattr(self.tokenizer, "chat_template", None) is None:
                problems.append(InputProblem(where, "this model's tokenizer has no chat template"))
                return None
            messages = [m.model_dump() for m in group.messages or []]
            try:
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as exc:  # a template may raise anything (jinja2 TemplateError, ...)
                problems.append(
                    InputProblem(where, f"the chat template refused these messages: {exc}")
                )
                return None
            ids = self._encode(text, special=False)
        if not ids:
            problems.append(
                InputProblem(
                    where,
                    "the prompt is empty: the first completion token "
                    "needs at least one prompt token to be predicted from",
                )
            )
            return None
        self._check_vocab(ids, where, problems)
        return ids

    def completion_ids(
        self, group: Group, loc: str, problems: list[InputProblem]
    ) -> list[list[int]]:
        if group.completion_ids is not None:
            out = [list(c) for c in group.completion_ids]
            for j, ids in enumerate(out):
                self._check_vocab(ids, f"{loc}.completion_ids[{j}]", problems)
            return out
        if not self._need_tokenizer(f"{loc}.completions", problems):
            return []
        return [self._encode(text, special=False) for text in group.completions or []]

    def _check_vocab(self, ids: list[int], where: str, problems: list[InputProblem]) -> None:
        for k, tok in enumerate(ids):
            if tok >= self.vocab_size:
                problems.append(
                    InputProblem(
                        f"{where}[{k}]",
                        f"token id {tok} is outside the vocabulary (ids 0..{self.vocab_size - 1})",
                    )
                )
                return

    def sequences(self, groups: list[Group]) -> list[list[TokenSequence]]:
        """One list of TokenSequence per group; raises InvalidInputError naming every problem."""
        problems: list[InputProblem] = []
        out: list[list[TokenSequence]] = []
        for i, group in enumerate(groups):
            loc = f"groups[{i}]"
            prompt = self.prompt_ids(group, loc, problems)
            completions = self.completion_ids(group, loc, problems)
            if prompt is None:
                out.append([])
                continue
            form = "completion_ids" if group.completion_ids is not None else "completions"
            seqs = []
            for j, comp in enumerate(completions):
                total = len(prompt) + len(comp)
                if total > self.max_length:
                    problems.append(
                        InputProblem(
                            f"{loc}.{form}[{j}]",
                            f"sequence of {total} tokens (prompt {len(prompt)} + completion "
                            f"{len(comp)}) exceeds max_sequence_tokens={self.max_length}",
                        )
                    )
                seqs.append(TokenSequence(tuple(prompt), tuple(comp)))
            out.append(seqs)
        if problems:
            raise InvalidInputError(problems)
        return out
