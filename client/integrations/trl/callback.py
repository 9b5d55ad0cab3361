"""The weight-sync callback: the policy's weights to the service after every optimizer step."""

from __future__ import annotations

import logging
import time
from typing import Any

from ...errors import VigorError
from ..weights import VersionClock, is_peft, sync_weights, unwrap
from .clients import sync_client

log = logging.getLogger(__name__)


def _callback_base() -> type:
    from transformers import TrainerCallback  # TRL users have transformers

    return TrainerCallback


class VigorWeightSyncCallback(_callback_base()):  # type: ignore[misc]
    """Sends the policy's weights to the service after every optimizer step.

    The version is the trainer's global step (plus the shared clock's offset). Full models send
    their trainable parameters; peft models only the LoRA adapter. With `checkpoints_dir` the
    weights are saved there (`step-<version>/`) and the server reloads them from its disk (it must
    see that path). Only the main process sends; every send blocks until the server (every
    replica) has swapped, so the next generation is scored on the new weights.

    At the start of training, the server must hold the policy's weights as of the current step:
    - server version == global step: assumed to be the policy's (start the server on the same
      checkpoint as the trainer); nothing is sent;
    - server version < global step (a resumed run): the weights are sent as that step's version;
    - a peft policy while no adapter is served, or `push_on_train_begin=True`: the weights are sent
      as version max(server + 1, step) and the clock's offset makes later versions follow on;
    - server version > global step otherwise: refused (`VigorError`), since the served weights
      would not be the ones that sample the first completions.
    """

    def __init__(
        self,
        server: Any = "http://127.0.0.1:8000",
        *,
        checkpoints_dir: str | None = None,
        keep_checkpoints: int = 2,
        clock: VersionClock | None = None,
        push_on_train_begin: bool = False,
        push_kwargs: dict | None = None,
    ) -> None:
        self.client = sync_client(server)
        self.checkpoints_dir = checkpoints_dir
        self.keep_checkpoints = keep_checkpoints
        self.clock = clock or VersionClock()
        self.push_on_train_begin = push_on_train_begin
        self.push_kwargs = push_kwargs or {}
        self.synced: list[tuple[int, int, float]] = []  # (step, version, seconds)

    def _send(self, model: Any, step: int, version: int) -> None:
        t0 = time.perf_counter()
        sync_weights(
            self.client,
            model,
            version,
            checkpoints_dir=self.checkpoints_dir,
            keep=self.keep_checkpoints,
            **self.push_kwargs,
        )
        seconds = time.perf_counter() - t0
        self.synced.append((step, version, seconds))
        log.info("weights v%d (step %d) synced in %.2f s", version, step, seconds)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if model is None or not getattr(state, "is_world_process_zero", True):
            return
        step = state.global_step
        info = self.client.model_info()
        served = info.weight_version
        needs_adapter = is_peft(unwrap(model)) and info.adapter is None
        if self.push_on_train_begin or needs_adapter:
            version = max(served + 1, step)
            self.clock.offset = version - step
            self._send(model, step, version)
        elif served < step:
            self.clock.offset = 0
            self._send(model, step, step)
        elif served > self.clock.version_for(step):
            raise VigorError(
                f"the server holds weight version {served}, newer than this run's step {step}: "
                "restart it on the policy's checkpoint, or pass push_on_train_begin=True"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if model is None or not getattr(state, "is_world_process_zero", True):
            return
        self._send(model, state.global_step, self.clock.version_for(state.global_step))
