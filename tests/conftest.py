"""Shared fixtures: the default model served by a real `vigor-serve` process on loopback."""

from __future__ import annotations

import pytest

from .servers import ProcessServer, shared_cache_dir


@pytest.fixture(scope="session")
def default_model_dir():
    from vigor_service.models.default_model import prepare_default_model

    return prepare_default_model(shared_cache_dir())


@pytest.fixture(scope="session")
def served_default(default_model_dir, tmp_path_factory):
    """A real server on the default model, shared by the API and client tests."""
    server = ProcessServer()
    server.start(tmp_path_factory.mktemp("server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def default_tokenizer(default_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def default_model(default_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def tiny_chat_model_dir(default_model_dir, tmp_path_factory):
    """A tiny random tied Llama with the default model's tokenizer: real text, fast scoring."""
    import torch
    from transformers import AutoTokenizer

    from .tiny_models import tiny_llama_for

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    path = tmp_path_factory.mktemp("tiny-chat")
    tiny_llama_for(tok, dtype=torch.float32).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def served_tiny_chat(tiny_chat_model_dir, tmp_path_factory):
    """A real server on the tiny chat model, for trainer-driven tests that need many passes."""
    # float64, so a group scored in another row order agrees to the last bits that matter
    server = ProcessServer("--model", str(tiny_chat_model_dir), "--dtype", "float64")
    server.start(tmp_path_factory.mktemp("tiny-chat-server") / "server.log")
    yield server
    server.stop()
