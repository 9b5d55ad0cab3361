"""The verl checkpoint callback, loaded and called by verl 0.9.1's own trainer code.

The configuration is verl's own `ppo_trainer.yaml` composed by Hydra with the command-line
overrides a user gives; `build_checkpoint_callback` (what `PPOTrainer.__init__` calls) loads our
class from `trainer.checkpoint_callback_class`; `PPOTrainer._save_checkpoint` (the v1 trainer's
own method, unchanged) writes the step directory and the tracker and calls `on_save`. The one
stand-in is the actor worker group: FSDP needs GPUs, so its `save_checkpoint` writes the
Hugging Face directory with the calls `FSDPCheckpointManager.save_checkpoint` makes for
`hf_model` (an empty bf16 model from the config, `save_pretrained` with the fp32 full state dict).
A real `vigor-serve` process reloads each step; the scores at version k equal a fresh server's
started on step k's directory, and the naive float64 gradient norm.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from vigor_client import VigorClient
from vigor_client.integrations.verl_checkpoint import FQN, VigorCheckpointCallback

from ...naive import naive_grad_norm
from ...servers import ProcessServer

PROMPT, COMPLETIONS = [1, 2, 3, 4], [[5, 6, 7], [8, 9], [10, 11, 12, 13]]


def verl_config(*overrides: str):
    """verl's own trainer configuration with these command-line overrides."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def user_overrides(root: Path, url: str) -> list[str]:
    return [
        f"trainer.checkpoint_callback_class={FQN}",
        "trainer.save_freq=1",
        f"trainer.default_local_dir={root}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        f"+trainer.vigor.server_url={url}",
    ]


class ActorWorkerGroup:
    """Stands in for the FSDP actor worker group (GPUs only): writes `<actor>/huggingface/` as
    FSDPCheckpointManager does for `hf_model`."""

    def __init__(self, model) -> None:
        self.model = model

    def save_checkpoint(self, local_path, remote_path, global_step, max_ckpt_to_keep=None):
        import torch
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM

        state_dict = {k: v.detach().clone() for k, v in self.model.state_dict().items()}  # fp32
        with init_empty_weights():
            save_model = AutoModelForCausalLM.from_config(
                self.model.config, torch_dtype=torch.bfloat16
            )
        save_model.to_empty(device="cpu")
        save_model.save_pretrained(os.path.join(local_path, "huggingface"), state_dict=state_dict)


def score(url: str, version: int):
    with VigorClient(url) as client:
        res = client.score(
            [{"prompt_ids": PROMPT, "completion_ids": COMPLETIONS}],
            min_weight_version=version,
            wait_s=5.0,
        )
    return res.weight_version, res.groups[0]


def test_a_configuration_under_which_the_weights_would_not_follow_is_refused():
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

    good = user_overrides(Path("/tmp/ckpts"), "http://127.0.0.1:9")
    no_hf = [o for o in good if "save_contents" not in o]
    with pytest.raises(ValueError, match=r"save_contents=.* has no 'hf_model'"):
        build_checkpoint_callback(verl_config(*no_hf))
    no_saves = [o for o in good if "save_freq" not in o]  # verl's default: -1
    with pytest.raises(ValueError, match=r"trainer\.save_freq=-1: nothing is saved"):
        build_checkpoint_callback(verl_config(*no_saves))
    with pytest.raises(ValueError, match="unknown key"):
        build_checkpoint_callback(verl_config(*good, "+trainer.vigor.sever_url=x"))
    callback = build_checkpoint_callback(verl_config(*good))
    with pytest.raises(FileNotFoundError, match="add 'hf_model'"):
        callback.on_save(trainer=None, global_step=1, checkpoint_dir="/nonexistent/global_step_1")


@pytest.mark.slow
def test_verl_saves_each_step_and_the_server_scores_it_at_that_version(tiny_checkpoint, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from verl.trainer.ppo.checkpoint_callback import CheckpointCallback, build_checkpoint_callback
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    root = tmp_path / "ckpts"
    root.mkdir()
    server = ProcessServer("--model", str(tiny_checkpoint), "--dtype", "float64",
                           "--engine", "loop", "--allowed-weights-dir", str(root))  # fmt: skip
    server.start(tmp_path / "server.log")
    try:
        config = verl_config(*user_overrides(root, server.url))
        callback = build_checkpoint_callback(config)  # PPOTrainer.__init__'s own call
        assert isinstance(callback, VigorCheckpointCallback)
        assert isinstance(callback, CheckpointCallback)
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
        trainer = SimpleNamespace(
            config=config,
            checkpoint_callback=callback,
            actor_rollout_wg=ActorWorkerGroup(model),
            use_critic=False,
            train_dataloader=SimpleNamespace(state_dict=lambda: {}),
            trainer_mode=config.trainer.v1.trainer_mode,
        )
        followed = {}
        torch.manual_seed(3)
        for step in (1, 2):
            with torch.no_grad():  # an optimizer step's worth of change
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            trainer.global_steps = step
            PPOTrainer._save_checkpoint(trainer)  # verl's own: save, tracker, on_save
            assert (root / "latest_checkpointed_iteration.txt").read_text() == str(step)
            hf_dir = root / f"global_step_{step}" / "actor" / "huggingface"
            with safe_open(hf_dir / "model.safetensors", "pt") as f:  # fp32, as verl writes
                names = f.keys()  # safe_open is not iterable
                assert {f.get_slice(k).get_dtype() for k in names} == {"F32"}
            version, group = score(server.url, step)
            assert version == step
            want = [naive_grad_norm(model, PROMPT, c) for c in COMPLETIONS]  # float64 copy
            assert group.grad_norms == pytest.approx(want, rel=1e-9)
            followed[step] = group
        assert [(s, v) for s, v, _ in callback.loaded] == [(1, 1), (2, 2)]
        with VigorClient(server.url) as client:
            assert client.model_info().dtype == "float64"
    finally:
        server.stop()

    for step, group in followed.items():  # a fresh server on step k's saved weights
        hf_dir = root / f"global_step_{step}" / "actor" / "huggingface"
        fresh = ProcessServer("--model", str(hf_dir), "--dtype", "float64", "--engine", "loop")
        fresh.start(tmp_path / f"fresh-{step}.log")
        try:
            version, alone = score(fresh.url, 0)
        finally:
            fresh.stop()
        assert version == 0
        assert alone.scores == pytest.approx(group.scores, rel=1e-12)
        assert alone.rewards == group.rewards


def test_server_dir_maps_the_trainers_checkpoint_root_to_the_servers_mount(tmp_path):
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

    root = tmp_path / "ckpts"
    config = verl_config(
        *user_overrides(root, "http://127.0.0.1:9"), "+trainer.vigor.server_dir=/mnt/ckpts"
    )
    callback = build_checkpoint_callback(config)
    hf_dir = root / "global_step_3" / "actor" / "huggingface"
    assert callback.server_path(hf_dir) == "/mnt/ckpts/global_step_3/actor/huggingface"
    with pytest.raises(ValueError, match=r"not under trainer\.default_local_dir"):
        callback.server_path(tmp_path / "elsewhere" / "huggingface")
