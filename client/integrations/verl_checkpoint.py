"""A verl checkpoint callback: the server reloads each saved actor, so rewards follow the policy.

verl 0.9.1's v1 trainer (`trainer.use_v1=True`, the default) builds the class named by
`trainer.checkpoint_callback_class` with the full config (`build_checkpoint_callback`) and, on
the driver, calls `on_save(trainer=, global_step=, checkpoint_dir=, async_save=)` after each
save: after the workers wrote `global_step_{N}/` and the tracker, before step N+1 syncs weights
to the rollout and generates. With `hf_model` in the actor's `save_contents`, rank 0 has then
written `global_step_{N}/actor/huggingface/` with `save_pretrained` (fp32 under FSDP). This
callback has the server reload that directory as weight version N, cast to the dtype it serves,
and returns once the server serves N: every sample of step N+1 is scored on the weights that
generated it.

    trainer.checkpoint_callback_class=vigor_client.integrations.verl_checkpoint.VigorCheckpointCallback
    trainer.save_freq=1 trainer.default_local_dir=/abs/shared/ckpts
    actor_rollout_ref.actor.checkpoint.save_contents='[model,optimizer,extra,hf_model]'
    +trainer.vigor.server_url=http://127.0.0.1:8000

`trainer.vigor` keys (all optional): `server_url` (default `reward.reward_kwargs.server_url`,
then $VIGOR_URL, then http://127.0.0.1:8000; several, comma-separated, reload every replica),
`admin_token` (default $VIGOR_ADMIN_TOKEN; prefer the environment, verl prints its config),
`api_token` (default $VIGOR_API_TOKEN), `timeout` (seconds one reload may take, default 330),
`server_dir` (where the server sees `trainer.default_local_dir`, when it mounts it elsewhere).
The server must be started with `--allowed-weights-dir` covering that directory. Torch-free:
the server reads the files.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from vigor_client.replicas import connect

log = logging.getLogger(__name__)

FQN = "vigor_client.integrations.verl_checkpoint.VigorCheckpointCallback"
DEFAULT_URL = "http://127.0.0.1:8000"
KEYS = ("server_url", "admin_token", "api_token", "timeout", "server_dir")
HF_SUBDIR = ("actor", "huggingface")  # fsdp_checkpoint_manager.py: <actor dir>/huggingface


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        getter = getattr(node, "get", None)
        node = getter(part) if getter is not None else getattr(node, part, None)
        if node is None:
            return default
    return node


def _base() -> type:
    # verl's base class when verl is there (where the trainer loads us); a plain object for
    # callers that only build the settings, so importing this stays light.
    try:
        from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
    except ImportError:
        return object
    return CheckpointCallback


def settings(config: Any) -> dict[str, Any]:
    """`trainer.vigor` with its defaults; refuses a configuration under which the weights
    would not follow (no HF model saved, no saves, asynchronous saves), naming the key."""
    raw = dict(_get(config, "trainer.vigor", {}) or {})
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"trainer.vigor: unknown key(s) {unknown}; known: {list(KEYS)}")
    url = raw.get("server_url") or _get(config, "reward.reward_kwargs.server_url")
    raw["server_url"] = str(url or os.environ.get("VIGOR_URL") or DEFAULT_URL)
    raw["timeout"] = float(raw.get("timeout") or 330.0)
    if config is None:
        return raw
    contents = list(_get(config, "actor_rollout_ref.actor.checkpoint.save_contents", []) or [])
    if "hf_model" not in contents:
        raise ValueError(
            f"actor_rollout_ref.actor.checkpoint.save_contents={contents} has no 'hf_model', so "
            "no Hugging Face model is saved for the server to load: add it, e.g. "
            "actor_rollout_ref.actor.checkpoint.save_contents='[model,optimizer,extra,hf_model]'"
        )
    if _get(config, "actor_rollout_ref.actor.checkpoint.async_save", False):
        raise ValueError(
            "actor_rollout_ref.actor.checkpoint.async_save=True: the files may still be written "
            "when on_save runs; the server would load a partial model. Turn it off"
        )
    freq = _get(config, "trainer.save_freq", -1)
    if not isinstance(freq, int) or freq <= 0:
        raise ValueError(
            f"trainer.save_freq={freq!r}: nothing is saved, so the server would score every "
            "step with the initial policy. Set trainer.save_freq=1"
        )
    if freq > 1:
        log.warning(
            "trainer.save_freq=%d: the server follows the policy every %d steps, so the steps "
            "in between are scored with weights up to %d updates old (VIGOR wants save_freq=1)",
            freq,
            freq,
            freq - 1,
        )
    mode = _get(config, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        log.warning(
            "trainer.v1.trainer_mode=%s: rollouts may be generated by older weights than the "
            "last save; the server scores with the weights of the last save",
            mode,
        )
    return raw


class VigorCheckpointCallback(_base()):  # type: ignore[misc]
    """Reload `global_step_{N}/actor/huggingface` into the server as version N on each save.

    `loaded` lists every reload as (step, version served, seconds).
    """

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.settings = settings(config)
        s = self.settings
        self.client = connect(
            s["server_url"], admin_token=s.get("admin_token"), api_token=s.get("api_token")
        )
        self.local_root = _get(config, "trainer.default_local_dir")
        self.loaded: list[tuple[int, int, float]] = []

    def server_path(self, hf_dir: Path) -> str:
        """The directory as the server sees it (`server_dir` stands for default_local_dir)."""
        server_dir = self.settings.get("server_dir")
        if not server_dir or not self.local_root:
            return str(hf_dir)
        root = Path(self.local_root).resolve()
        try:
            return str(Path(server_dir) / hf_dir.relative_to(root))
        except ValueError:
            raise ValueError(
                f"{hf_dir} is not under trainer.default_local_dir={root}, which "
                f"trainer.vigor.server_dir={server_dir} stands for"
            ) from None

    def on_save(
        self,
        trainer: Any = None,
        global_step: int = 0,
        checkpoint_dir: str = "",
        async_save: bool = False,
        **kwargs: Any,
    ) -> None:
        if async_save:
            raise RuntimeError(
                f"step {global_step} was saved asynchronously: its files may be incomplete, so "
                "the server cannot load them now (set actor.checkpoint.async_save=False)"
            )
        hf_dir = Path(checkpoint_dir, *HF_SUBDIR).resolve()
        if not (hf_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no Hugging Face model in {hf_dir} after step {global_step}'s save: add "
                "'hf_model' to actor_rollout_ref.actor.checkpoint.save_contents"
            )
        t0 = time.perf_counter()
        # verl saves the fp32 master weights; the server casts them to the dtype it serves.
        self.client.reload_weights(
            self.server_path(hf_dir),
            version=global_step,
            allow_cast=True,
            timeout=self.settings["timeout"],
        )
        served = self.client.model_info().weight_version  # replicas: the oldest one
        if served != global_step:
            raise RuntimeError(
                f"the server serves weight version {served} after reloading step {global_step}"
            )
        seconds = time.perf_counter() - t0
        self.loaded.append((global_step, served, seconds))
        log.info("server reloaded step %d from %s in %.2f s", global_step, hf_dir, seconds)


__all__ = ["FQN", "VigorCheckpointCallback", "settings"]
