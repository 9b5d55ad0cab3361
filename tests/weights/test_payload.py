"""The safetensors byte format: parsed without copying, refused when anything is off."""

import json
import struct

import pytest
import torch
from safetensors.torch import save

from vigor_service.errors import WeightsRejectedError
from vigor_service.weights.payload import parse_safetensors


def raw(header: dict, data: bytes = b"") -> bytearray:
    text = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(text)) + text + data)


def test_round_trip_of_every_common_dtype_with_metadata():
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5, dtype=torch.float64),
        "c": torch.randn(2, 2).to(torch.bfloat16),
        "d": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e": torch.zeros(0, 3),
        "f": torch.tensor([True, False]),
        "g": torch.randn(7).half(),
    }
    buf = bytearray(save(tensors, metadata={"k": "v"}))
    payload = parse_safetensors(buf)
    assert payload.metadata == {"k": "v"}
    assert payload.tensors.keys() == tensors.keys()
    for name, t in tensors.items():
        assert torch.equal(payload.tensors[name], t), name
    base = torch.frombuffer(buf, dtype=torch.uint8).data_ptr()  # views, not copies
    assert base <= payload.tensors["a"].data_ptr() < base + len(buf)


def test_unaligned_data_is_still_read():
    data = bytes(3) + torch.arange(4, dtype=torch.float32).numpy().tobytes()
    header = {"pad": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "x": {"dtype": "F32", "shape": [4], "data_offsets": [3, 19]}}  # fmt: skip
    assert parse_safetensors(raw(header, data)).tensors["x"].tolist() == [0, 1, 2, 3]


BAD = [
    (bytearray(b"\x01\x02"), "shorter than the 8-byte header"),
    (bytearray(struct.pack("<Q", 1000) + b"{}"), "truncated"),
    (bytearray(struct.pack("<Q", 4) + b"nope"), "not JSON"),
    (raw([1, 2]), "not a JSON object"),  # type: ignore[arg-type]
    (raw({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "'x'"),
    (raw({"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "unknown dtype"),
    (raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)), "shape [2]"),
    (
        raw(
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            bytes(8),
        ),
        "overlaps",
    ),
    (raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "gap"),
    (raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)), "after the"),
    (raw({"__metadata__": {"a": 1}}), "__metadata__"),
]


@pytest.mark.parametrize(("buf", "phrase"), BAD, ids=[b[1] for b in BAD])
def test_malformed_bodies_are_refused(buf, phrase):
    with pytest.raises(WeightsRejectedError) as info:
        parse_safetensors(buf)
    assert "not a valid safetensors payload" in info.value.message
    assert phrase in info.value.message


def test_a_name_twice_in_the_header_is_refused():
    text = b'{"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
    text += b'"x": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    buf = bytearray(struct.pack("<Q", len(text)) + text + b"\x00")
    with pytest.raises(WeightsRejectedError, match="'x' appears twice"):
        parse_safetensors(buf)


def test_truncating_a_real_file_anywhere_is_refused():
    full = save({"a": torch.randn(10, 10), "b": torch.randn(7)})
    for cut in (4, 9, 40, len(full) // 2, len(full) - 1):
        with pytest.raises(WeightsRejectedError):
            parse_safetensors(bytearray(full[:cut]))
