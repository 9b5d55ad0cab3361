"""The weight-sync callback: the server holds the policy's weights whenever a batch is scored."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from ...errors import VigorError
from ..group_sync import HTTP, GroupSync
from ..weights import VersionClock, is_peft, sync_weights, unwrap
from .clients import sync_client
from .run import TrainerRun, broadcast_from_first, process_layout
from .sharding import gathered_state_dict, refuse_peft_sharded, sharded_by

log = logging.getLogger(__name__)


def _callback_base() -> type:
    from transformers import TrainerCallback  # TRL users have transformers

    return TrainerCallback


class VigorWeightSyncCallback(_callback_base()):  # type: ignore[misc]
    """Sends the policy's weights to the service when a generation has used new weights.

    TRL generates a batch every `steps_per_generation × num_iterations` micro-steps and scores
    it at once, so the weights to send are the ones the reward function is about to score at:
    before each scoring call it asks `weights_for(global_step)`, which sends them as version
    `global_step` (plus the shared clock's offset) only when the step moved since the last send,
    as TRL's own vLLM sync does (`_last_loaded_step`). With `steps_per_generation` or
    `num_iterations` above 1 most optimizer steps are never sampled from and send nothing.
    `synced` lists every send: (step, version, seconds).

    Full models send their trainable parameters; peft models only the LoRA adapter. With
    `checkpoints_dir` the weights are saved there (`step-<version>/`) and the server reloads them
    from its disk (it must see that path). Only the main process sends; a send returns once the
    server (every replica) has swapped. Under ZeRO-3 or FSDP every process gathers the full
    parameters before each send, as TRL does for its vLLM sync, and process 0 sends them
    (`sharding.py`): the reward function asks for the weights on every process at the same step.

    `distributed=True` (or a dict of `WeightSender` options: `backend`, `master_address`,
    `master_port`, `timeout_s`) sends the trainable parameters over a process group the
    trainer forms with the servers (NCCL on GPUs, Gloo otherwise) instead of HTTP; when the
    group cannot form, a warning says why and the weights go over HTTP (`group_sync.py`). The
    versions are the same either way. `routes` lists each send's route (`gloo`, `nccl`, `http`).

    At the start of training (`on_train_begin`, on every process), process 0 makes the server
    hold the policy's weights as of the current step and broadcasts the version offset and a run
    key to the other processes, so all of them ask for the same version at the same step:
    - server version == global step: assumed to be the policy's (start the server on the same
      checkpoint as the trainer); nothing is sent;
    - server version < global step (a resumed run): the weights are sent as that step's version;
    - a peft policy while no adapter is served, or `push_on_train_begin=True`: the weights are sent
      as version max(server + 1, step) and the clock's offset makes later versions follow on;
    - server version > global step otherwise: refused (`VigorError`) on every process, since the
      served weights would not be the ones that sample the first completions.
    """

    def __init__(
        self,
        server: Any = "http://127.0.0.1:8000",
        *,
        checkpoints_dir: str | None = None,
        keep_checkpoints: int = 2,
        clock: VersionClock | None = None,
        run: TrainerRun | None = None,
        push_on_train_begin: bool = False,
        push_kwargs: dict | None = None,
        client_options: dict | None = None,
        distributed: bool | dict = False,
    ) -> None:
        if distributed and checkpoints_dir is not None:
            raise ValueError(
                "distributed= sends weights over a process group and checkpoints_dir= through "
                "the server's disk: pass one of them"
            )
        self.client = sync_client(server, **(client_options or {}))
        self.checkpoints_dir = checkpoints_dir
        self.keep_checkpoints = keep_checkpoints
        self.run = run or TrainerRun(clock=clock or VersionClock())
        self.clock = self.run.clock
        self.run.weights_for = self.weights_for
        self.push_on_train_begin = push_on_train_begin
        self.push_kwargs = push_kwargs or {}
        self.synced: list[tuple[int, int, float]] = []  # (step, version, seconds)
        self.routes: list[str] = []  # how each send in `synced` went
        self.group: GroupSync | None = None
        if distributed:
            options = distributed if isinstance(distributed, dict) else {}
            self.group = GroupSync(self.client, options, **self.push_kwargs)
        self._model: Any = None
        self._sharded: str | None = None  # how the trainer shards the parameters, if it does
        self._served_step: int | None = None  # the step whose weights the server holds

    # --- sending ----------------------------------------------------------------------------
    def _send(self, model: Any, step: int, version: int) -> None:
        t0 = time.perf_counter()
        if self._sharded is not None:
            # A collective: every process gathers each parameter, process 0 keeps the copies.
            whole = gathered_state_dict(unwrap(model), self.run.rank)
            if whole is None:  # not process 0: its part was the gathering
                self._served_step = step
                return
            model = whole
        if self.group is not None:
            route = self.group.send(model, version)
        elif isinstance(model, dict):  # gathered: a partial update of the trainable tensors
            route = HTTP
            options = {"progress": False, **self.push_kwargs}
            self.client.push_weights(model, version=version, full=False, **options)
        else:
            route = HTTP
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
        self.routes.append(route)
        self._served_step = step
        log.info("weights v%d (step %d) synced over %s in %.2f s", version, step, route, seconds)

    def weights_for(self, step: int, model: Any = None) -> None:
        """Make the server hold the weights of `step` (call on every process; process 0 sends,
        and only when the weights changed since its last send)."""
        model = model if model is not None else self._model
        if model is None or step == self._served_step:
            return
        if self.run.rank != 0 and self._sharded is None:
            return
        self._send(model, step, self.clock.version_for(step))

    # --- training start: one clock and one run key on every process ---------------------------
    def _first_weights(self, state: Any, model: Any) -> tuple[int, int | None]:
        """On process 0: the clock's offset and the version the start step's weights must be
        sent as (None: the server holds them)."""
        step = state.global_step
        info = self.client.model_info()
        served = info.weight_version
        needs_adapter = is_peft(unwrap(model)) and info.adapter is None
        if self.push_on_train_begin or needs_adapter:
            version = max(served + 1, step)
            self.clock.offset = version - step
            return self.clock.offset, version
        if served < step:
            self.clock.offset = 0
            return 0, step
        if served > self.clock.version_for(step):
            raise VigorError(
                f"the server holds weight version {served}, newer than this run's step {step}: "
                "restart it on the policy's checkpoint, or pass push_on_train_begin=True"
            )
        return self.clock.offset, None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        # The same arguments and model everywhere: every process refuses alike.
        self._sharded = sharded_by(args, model)
        refuse_peft_sharded(self._sharded, unwrap(model) if model is not None else None)
        if self._sharded is not None and self.checkpoints_dir is not None:
            raise NotImplementedError(
                f"checkpoints_dir= with {self._sharded}-sharded parameters: the gathered "
                "weights go over HTTP or distributed=True; drop checkpoints_dir"
            )
        rank, world_size = process_layout()
        run = self.run
        run.rank, run.world_size, run.model = rank, world_size, model
        run.num_generations = getattr(args, "num_generations", None)
        run.num_generations_eval = getattr(args, "num_generations_eval", None)
        self._model = model
        agreed: tuple[str, Any, Any, Any] = ("error", "process 0 did not start", None, None)
        failure: BaseException | None = None
        if rank == 0:
            try:
                offset, first = (0, None)
                if model is not None:
                    offset, first = self._first_weights(state, model)
                if first is not None and self._sharded is None:
                    self._send(model, state.global_step, first)  # before agreeing: errors reach all
                    first = None
                agreed = ("ok", offset, uuid.uuid4().hex[:12], first)
            except BaseException as exc:  # every process must hear of it, or they would hang
                failure = exc
                agreed = ("error", f"{type(exc).__name__}: {exc}", None, None)
        if world_size > 1:
            agreed = broadcast_from_first(agreed)
        if failure is not None:
            raise failure
        if agreed[0] != "ok":
            raise VigorError(f"the weight sync failed to start on process 0: {agreed[1]}")
        self.clock.offset, run.run_id, run.agreed = agreed[1], agreed[2], True
        if agreed[3] is not None:  # sharded: every process gathers, process 0 sends
            self._send(model, state.global_step, agreed[3])
        self._served_step = state.global_step

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any):
        """Leave the weight-transfer group (the servers then accept a new trainer's)."""
        if self.group is not None:
            self.group.close()
