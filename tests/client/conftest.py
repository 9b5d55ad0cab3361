"""Fixtures for the client tests: a tiny random Llama saved as a Hugging Face checkpoint, which
`vigor-serve --model <dir>` serves in a few seconds (no tokenizer: requests carry token ids)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from ..tiny_models import tiny_llama

    path = tmp_path_factory.mktemp("tiny-ckpt")
    tiny_llama(tied=True, dtype=torch.float32).save_pretrained(path)
    return path
