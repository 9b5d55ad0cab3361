"""Staged pushes: bounded, merged per upload, dropped on abort or expiry."""

import time

import pytest
import torch

from vigor_service.errors import LimitExceededError, UploadNotFoundError, WeightsRejectedError
from vigor_service.weights.staging import StagingArea
from vigor_service.weights.validate import Checked


def bucket(**tensors) -> tuple[Checked, bytearray]:
    checked = Checked()
    for name, t in tensors.items():
        checked.tensors[name] = t
        checked.given[name] = name
    return checked, bytearray(sum(t.nbytes for t in tensors.values()))


def test_reserve_is_bounded_and_released():
    area = StagingArea(ttl_s=60, max_bytes=lambda: 100)
    area.reserve(60)
    with pytest.raises(LimitExceededError, match=r"over the bound of 100"):
        area.reserve(41)
    area.release(60)
    area.reserve(100)
    assert area.staged_bytes == 100


def test_merge_counts_buffers_and_checks_repeats():
    area = StagingArea(ttl_s=60, max_bytes=lambda: 10**6)
    up = area.create()
    a, b = torch.ones(4), torch.zeros(2)
    area.merge(up.id, *bucket(a=a))
    area.merge(up.id, *bucket(b=b, a=a.clone()))  # a repeated with equal values: fine
    assert set(up.checked.tensors) == {"a", "b"} and area.staged_bytes == 16 + 24
    with pytest.raises(WeightsRejectedError, match=r"'a' was already staged"):
        area.merge(up.id, *bucket(a=a + 1))
    status = area.status(up)
    assert status.tensors == 2 and status.bytes == 24 and 0 < status.expires_in_s <= 60


def test_take_restore_done_keep_the_accounting():
    area = StagingArea(ttl_s=60, max_bytes=lambda: 10**6)
    up = area.create()
    area.merge(up.id, *bucket(a=torch.ones(4)))
    taken = area.take(up.id)
    with pytest.raises(UploadNotFoundError, match=r"being committed"):
        area.merge(up.id, *bucket(b=torch.ones(1)))
    assert area.staged_bytes == 16
    area.restore(taken)
    assert area.staged_bytes == 16 and len(area) == 1
    area.done(area.take(up.id))
    assert area.staged_bytes == 0 and len(area) == 0


def test_abort_and_expiry_drop_the_data():
    area = StagingArea(ttl_s=0.2, max_bytes=lambda: 10**6)
    up = area.create()
    area.merge(up.id, *bucket(a=torch.ones(4)))
    area.abort(up.id)
    with pytest.raises(UploadNotFoundError):
        area.abort(up.id)
    old = area.create()
    area.merge(old.id, *bucket(a=torch.ones(4)))
    assert area.sweep(time.monotonic() + 1) == 1 and area.expired == 1
    with pytest.raises(UploadNotFoundError, match=r"dropped after 0.2 s"):
        area.check_open(old.id)
    assert area.staged_bytes == 0
