"""ServingSlot: the one owner of the served model, its version and readiness."""

from __future__ import annotations

import asyncio

import pytest

from vigor_service.errors import NotReadyError, StaleWeightsError, VersionConflictError
from vigor_service.serving import EngineWorker, ServingSlot


def test_versions_only_increase_and_a_refusal_names_the_served_one():
    slot = ServingSlot(version=3)
    assert slot.next_version(None) == 4
    assert slot.next_version(9) == 9
    for stale in (3, 2):
        with pytest.raises(VersionConflictError) as info:
            slot.next_version(stale)
        assert info.value.current_version == 3
        assert f"version {stale} is not above the served version 3" in info.value.message
    assert slot.bump_version(None) == (3, 4)
    assert slot.bump_version(7) == (4, 7)
    with pytest.raises(VersionConflictError):
        slot.bump_version(7)
    assert slot.version == 7


def test_readiness_says_why_not():
    slot = ServingSlot()
    with pytest.raises(NotReadyError, match="loading"):
        slot.require_served()
    slot.set_load_failed("no such file")
    with pytest.raises(NotReadyError, match="model failed to load: no such file"):
        slot.require_served()
    assert not slot.ready
    slot.draining = True
    assert slot.not_ready_reason() == "shutting down"
    with pytest.raises(NotReadyError, match="another replica"):
        slot.require_accepting()


def test_a_bump_on_the_worker_wakes_a_request_waiting_for_that_version():
    async def main() -> list[int]:
        slot, worker = ServingSlot(), EngineWorker()
        slot.bind_loop(asyncio.get_running_loop())
        seen: list[int] = []

        async def waiter(minimum: int) -> None:
            await slot.wait_for_version(minimum, 10)
            seen.append(slot.version)

        tasks = [asyncio.create_task(waiter(m)) for m in (1, 2)]
        await asyncio.sleep(0.05)
        assert seen == []  # nobody woke before a bump
        await worker.run(slot.bump_version, None)  # on the engine thread, as a swap does
        await asyncio.wait_for(tasks[0], 5)
        assert not tasks[1].done()
        await worker.run(slot.bump_version, 2)
        await asyncio.wait_for(tasks[1], 5)
        worker.shutdown()
        return seen

    assert asyncio.run(main()) == [1, 2]


def test_waiting_past_the_limit_is_stale_weights_naming_both_versions():
    async def main() -> None:
        slot = ServingSlot(version=2)
        slot.bind_loop(asyncio.get_running_loop())
        await slot.wait_for_version(2, 0.01)  # already there: no wait
        with pytest.raises(StaleWeightsError) as info:
            await slot.wait_for_version(5, 0.05)
        assert info.value.current_version == 2
        assert "at version 2, the request needs at least 5" in info.value.message

    asyncio.run(main())


def test_waiting_needs_a_bound_loop():
    async def main() -> None:
        with pytest.raises(RuntimeError, match="bind_loop"):
            await ServingSlot().wait_for_version(1, 0.01)

    asyncio.run(main())
