"""Reload sources: confined to the allowed directories, safetensors only, shards consistent."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from vigor_service.errors import PathNotAllowedError, WeightsRejectedError
from vigor_service.weights.sources import checkpoint_files, confine, read_checkpoint


def test_confine_resolves_dots_and_symlinks(tmp_path):
    allowed = tmp_path / "ckpts"
    (allowed / "step-1").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (allowed / "link").symlink_to(outside)
    assert confine(str(allowed / "step-1"), [allowed]) == (allowed / "step-1").resolve()
    assert confine(str(allowed), [allowed]) == allowed.resolve()
    for escape in (allowed / ".." / "secret", allowed / "link", allowed / "step-1/../../secret"):
        with pytest.raises(PathNotAllowedError, match=r"outside the allowed"):
            confine(str(escape), [allowed])
    with pytest.raises(PathNotAllowedError):  # a sibling whose name merely starts the same
        confine(str(tmp_path / "ckpts-evil"), [allowed])
    assert confine(str(outside), []) == outside.resolve()  # none configured: anything
    with pytest.raises(WeightsRejectedError, match=r"must be absolute"):
        confine("relative/dir", [])


def test_allowed_dir_given_through_a_symlink_still_works(tmp_path):
    real = tmp_path / "real"
    (real / "c").mkdir(parents=True)
    os.symlink(real, tmp_path / "alias")
    assert confine(str(real / "c"), [tmp_path / "alias"]) == (real / "c").resolve()


def test_checkpoint_layouts(tmp_path):
    a, b = {"x": torch.ones(2)}, {"y": torch.zeros(3)}
    single = tmp_path / "single"
    single.mkdir()
    save_file({**a, **b}, str(single / "model.safetensors"))
    files, index = checkpoint_files(single, [])
    assert [f.name for f in files] == ["model.safetensors"] and index is None
    assert read_checkpoint(files).keys() == {"x", "y"}

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file(a, str(sharded / "model-00001-of-00002.safetensors"))
    save_file(b, str(sharded / "model-00002-of-00002.safetensors"))
    weight_map = {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    files, index = checkpoint_files(sharded, [])
    assert len(files) == 2
    assert torch.equal(read_checkpoint(files, index)["y"], b["y"])

    files, _ = checkpoint_files(single / "model.safetensors", [])  # one file directly
    assert len(files) == 1


def test_inconsistent_or_unsafe_checkpoints_are_refused(tmp_path):
    save_file({"x": torch.ones(2)}, str(tmp_path / "s1.safetensors"))
    save_file({"x": torch.ones(2)}, str(tmp_path / "s2.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "s1.safetensors", "y": "s9.safetensors"}}))
    with pytest.raises(WeightsRejectedError, match=r"shard 's9.safetensors', which is missing"):
        checkpoint_files(tmp_path, [])
    index.write_text(json.dumps({"weight_map": {"x": "s1.safetensors", "z": "s2.safetensors"}}))
    files, wm = checkpoint_files(tmp_path, [])
    with pytest.raises(WeightsRejectedError, match=r"more than one shard"):
        read_checkpoint(files, wm)
    index.write_text("{not json")
    with pytest.raises(WeightsRejectedError, match=r"cannot read model.safetensors.index.json"):
        checkpoint_files(tmp_path, [])
    index.write_text(json.dumps({"weight_map": {"x": "../outside.safetensors"}}))
    with pytest.raises(PathNotAllowedError):
        checkpoint_files(tmp_path, [tmp_path])

    bin_only = tmp_path / "bin"
    bin_only.mkdir()
    (bin_only / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(WeightsRejectedError, match=r"only safetensors"):
        checkpoint_files(bin_only, [])
    with pytest.raises(WeightsRejectedError, match=r"no such file"):
        checkpoint_files(tmp_path / "nope", [])
    with pytest.raises(WeightsRejectedError, match=r"not a .safetensors file"):
        checkpoint_files(bin_only / "pytorch_model.bin", [])


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"x": torch.randn(100)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(WeightsRejectedError, match=r"model.safetensors: .*truncated"):
        read_checkpoint([path])
    path.write_bytes(os.urandom(64))
    with pytest.raises(WeightsRejectedError, match=r"model.safetensors: "):
        read_checkpoint([path])


@pytest.mark.parametrize("case", ["name too long", "symlink loop"])
def test_a_path_the_filesystem_refuses_is_rejected_not_an_oserror(tmp_path, case):
    if case == "name too long":
        path = str(tmp_path / ("a" * 5000))
    else:
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
        path = str(tmp_path / "loop" / "x")
    with pytest.raises(WeightsRejectedError, match="cannot read path"):
        confine(path, [tmp_path])
