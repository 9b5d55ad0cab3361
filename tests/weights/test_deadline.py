"""weights/deadline.py: a thread the caller stops waiting for hands a late result to `late`."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vigor_service.weights.deadline import in_daemon_thread


def test_a_result_after_the_caller_gave_up_goes_to_late_not_nowhere():
    async def main() -> list[object]:
        release, handed = threading.Event(), []
        landed = threading.Event()

        def join() -> object:
            release.wait(10)
            return "group"

        def late(value: object) -> None:
            handed.append(value)
            landed.set()

        with pytest.raises(TimeoutError):
            await in_daemon_thread(join, within=0.05, late=late)
        assert handed == []
        release.set()
        await asyncio.to_thread(landed.wait, 10)
        return handed

    assert asyncio.run(main()) == ["group"]


def test_within_the_bound_the_value_is_returned_and_late_is_not_called():
    async def main() -> None:
        called = []
        value = await in_daemon_thread(lambda: 7, within=5, late=called.append)
        assert value == 7 and called == []
        with pytest.raises(ValueError, match="bad peer"):
            await in_daemon_thread(_fail, within=5, late=called.append)
        assert called == []

    asyncio.run(main())


def _fail() -> None:
    raise ValueError("bad peer")
