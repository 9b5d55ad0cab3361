"""Step directories: the patterns of each trainer, and completeness read from the files alone."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vigor_service.watch.steps import StepPattern, readiness, weights_complete


def tensors(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(64, 32, generator=gen), "b": torch.randn(32, generator=gen)}


@pytest.mark.parametrize(
    ("preset", "made", "step", "checkpoint"),
    [
        ("openrlhf", "global_step12_hf", 12, "global_step12_hf"),
        ("verl", "global_step_7/actor/huggingface", 7, "global_step_7/actor/huggingface"),
        ("trl", "checkpoint-300", 300, "checkpoint-300"),
        ("run-{step}.ckpt/hf", "run-5.ckpt/hf", 5, "run-5.ckpt/hf"),
    ],
)
def test_each_preset_finds_its_trainers_step_directories(tmp_path, preset, made, step, checkpoint):
    (tmp_path / made).mkdir(parents=True)
    for decoy in ("global_step3", "global_step_x_hf", "checkpoint-", "notes.txt", "tmp"):
        (tmp_path / decoy).mkdir()
    found = StepPattern(preset).scan(tmp_path)
    assert list(found) == [step]
    assert found[step][1] == tmp_path / checkpoint


@pytest.mark.parametrize(
    "bad", ["checkpoints", "{step}/{step}", "hf/{step}", "/abs/{step}", "../{step}"]
)
def test_a_pattern_without_one_step_in_its_first_part_is_refused(bad):
    with pytest.raises(ValueError, match="watch pattern"):
        StepPattern(bad)


def test_a_single_file_is_ready_only_at_its_full_size(tmp_path):
    save_file(tensors(0), str(tmp_path / "whole.safetensors"))
    data = (tmp_path / "whole.safetensors").read_bytes()
    step = tmp_path / "global_step1_hf"
    step.mkdir()
    assert not weights_complete(step).ready  # config first, no weights yet
    for cut in (0, 5, 8, 40, len(data) // 2, len(data) - 1):
        (step / "model.safetensors").write_bytes(data[:cut])
        state = weights_complete(step)
        assert not state.ready, cut
        assert "model.safetensors" in state.why
    (step / "model.safetensors").write_bytes(data)
    assert weights_complete(step).ready


def test_a_sharded_save_is_ready_once_its_index_and_every_shard_are_complete(tmp_path):
    step = tmp_path / "s"
    step.mkdir()
    save_file({"a": tensors(1)["a"]}, str(step / "model-00001-of-00002.safetensors"))
    save_file({"b": tensors(1)["b"]}, str(tmp_path / "second"))
    assert not weights_complete(step).ready  # a shard and no index yet
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (step / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "not written yet" in weights_complete(step).why  # the second shard is missing
    data = (tmp_path / "second").read_bytes()
    (step / "model-00002-of-00002.safetensors").write_bytes(data[:-3])
    assert "bytes written" in weights_complete(step).why
    (step / "model-00002-of-00002.safetensors").write_bytes(data)
    assert weights_complete(step).ready


def test_tracker_and_marker_rules_wait_for_their_file(tmp_path):
    step = tmp_path / "global_step_4" / "actor" / "huggingface"
    step.mkdir(parents=True)
    save_file(tensors(2), str(step / "model.safetensors"))
    assert readiness("complete", None, tmp_path, 4, step).ready
    tracker = tmp_path / "latest_checkpointed_iteration.txt"
    assert not readiness("tracker", None, tmp_path, 4, step).ready
    tracker.write_text("")  # verl's tracker is not written atomically
    assert not readiness("tracker", None, tmp_path, 4, step).ready
    tracker.write_text("3")
    assert "names step 3" in readiness("tracker", None, tmp_path, 4, step).why
    tracker.write_text("4\n")
    assert readiness("tracker", None, tmp_path, 4, step).ready
    assert not readiness("marker", "DONE", tmp_path, 4, step).ready
    (step / "DONE").touch()
    assert readiness("marker", "DONE", tmp_path, 4, step).ready
