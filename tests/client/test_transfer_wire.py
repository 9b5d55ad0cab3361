"""The weight-transfer wire: the bucket plan against vLLM's packing loop, packing round trips,
the JSON models' refusals, and the torch-free / torch-needing split of the client package."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vigor_client.distributed.pack import pack_buckets, unpack_bucket
from vigor_client.transfer import (
    FinishWeightUpdateRequest,
    InitInfo,
    UpdateInfo,
    bucket_plan,
)


def vllm_packing(sizes: list[int], buffer_size: int) -> list[list[int]]:
    """vLLM's producer loop (packed_tensor.pack_tensors), written out independently: take
    tensors until the running total exceeds the buffer size, the one that exceeds it included."""
    buckets, it = [], iter(range(len(sizes)))
    while True:
        chunk, total = [], 0
        for k in it:
            chunk.append(k)
            total += sizes[k]
            if total > buffer_size:
                break
        if not chunk:
            return buckets
        buckets.append(chunk)


@given(st.lists(st.integers(0, 5000), max_size=40), st.integers(1, 6000))
def test_the_bucket_plan_is_vllms_packing(sizes, buffer_size):
    plan = bucket_plan(sizes, True, buffer_size)
    assert [list(r) for r in plan] == vllm_packing(sizes, buffer_size)


def test_unpacked_sends_one_tensor_per_broadcast():
    assert [list(r) for r in bucket_plan([5, 0, 7], False, 1)] == [[0], [1], [2]]
    assert bucket_plan([], True, 10) == []


def test_packing_round_trips_every_dtype_even_unaligned():
    gen = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(3, generator=gen).to(torch.bfloat16),  # 6 bytes: the next one is unaligned
        torch.randn(2, 5, generator=gen, dtype=torch.float64),
        torch.tensor([True, False, True]),
        torch.empty(0, 4),
        torch.arange(7, dtype=torch.int64).reshape(7, 1),
        torch.randn(4, 4, generator=gen).t(),  # not contiguous
    ]
    sizes = [t.numel() * t.element_size() for t in tensors]
    plan = bucket_plan(sizes, True, 40)
    buckets = list(pack_buckets(tensors, plan, torch.device("cpu")))
    assert [b.numel() for b in buckets] == [sum(sizes[k] for k in r) for r in plan]
    assert len(buckets) > 1
    out = []
    for bucket, r in zip(buckets, plan, strict=True):
        out += unpack_bucket(bucket, [tensors[k].shape for k in r], [tensors[k].dtype for k in r])
    for got, want in zip(out, tensors, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)


def test_the_models_refuse_naming_the_field():
    with pytest.raises(ValidationError, match="rank_offset 3 is outside world_size 3"):
        InitInfo(master_address="h", master_port=5, rank_offset=3, world_size=3)
    with pytest.raises(ValidationError, match="rank_offset"):
        InitInfo(master_address="h", master_port=5, rank_offset=0, world_size=3)
    with pytest.raises(ValidationError, match="`shapes` should be of the same size as `names`"):
        UpdateInfo(names=["a"], dtype_names=["float32"], shapes=[])
    with pytest.raises(ValidationError, match=r"names\[2\]: tensor 'a' is listed twice"):
        UpdateInfo(names=["a", "b", "a"], dtype_names=["float32"] * 3, shapes=[[1]] * 3)
    with pytest.raises(ValidationError, match="extra"):
        UpdateInfo.model_validate({"names": ["a"], "dtype_names": ["f"], "shapes": [[1]], "x": 1})
    assert FinishWeightUpdateRequest(weight_version="12").version() == 12
    assert FinishWeightUpdateRequest(weight_version=3).version() == 3
    assert FinishWeightUpdateRequest().version() is None
    with pytest.raises(ValidationError, match="not a non-negative integer"):
        FinishWeightUpdateRequest(weight_version="-1")


def test_the_defaults_are_vllms():
    info = UpdateInfo(names=["a"], dtype_names=["bfloat16"], shapes=[[2]])
    assert (info.packed, info.packed_buffer_size_bytes, info.packed_num_buffers) == (
        False, 1 << 30, 2,
    )  # fmt: skip


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys; sys.modules['torch'] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True)


def test_the_wire_is_torch_free_and_the_sender_says_what_it_needs():
    ok = run_without_torch("import vigor_client.transfer as t; print(t.bucket_plan([1], True, 1))")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "[range(0, 1)]"
    missing = run_without_torch("import vigor_client.distributed")
    assert missing.returncode == 1
    assert "ImportError: vigor_client.distributed sends weights over torch.distributed and " \
           "needs torch: pip install 'vigor-reward[distributed]'" in missing.stderr  # fmt: skip
