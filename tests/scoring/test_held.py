"""Held samples: a sample failed after its caller left leaves no error in the log."""

import asyncio
import gc

from vigor_service.engine.types import TokenSequence
from vigor_service.errors import NotReadyError
from vigor_service.scoring.held import HeldSample


def test_only_a_failed_sample_whose_caller_left_is_marked_retrieved():
    loop = asyncio.new_event_loop()
    seen: list[str] = []
    loop.set_exception_handler(lambda _, context: seen.append(context["message"]))
    try:
        for gone in (True, False):
            future = loop.create_future()
            HeldSample(TokenSequence((1,), (2,)), (), future, 0, caller_gone=gone).fail(
                NotReadyError("server is shutting down")
            )
            assert future.done()
            del future
            gc.collect()
    finally:
        loop.close()
    # The caller that is still there awaits its future (here nobody does, hence the one report).
    assert seen == ["Future exception was never retrieved"]
