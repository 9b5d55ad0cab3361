"""OpenRLHF 0.11.2's own HF checkpoint writer, run on CPU.

`PolicyModelActor.save_checkpoint` (trainer/ray/ppo_actor.py) writes `{ckpt.path}/{tag}_hf` with
`strategy.save_model(actor, tokenizer, path)` (utils/deepspeed/deepspeed.py), the tag being
`global_step{N}` (trainer/ppo_trainer.py `save_logs_and_checkpoints`). PolicyModelActor itself
cannot be built here: it is a Ray GPU actor and its package imports vLLM. So the test runs the
pieces below it, theirs unchanged: a real `DeepspeedStrategy` (DeepSpeed 0.19.6 installed, CPU
accelerator) and their `Actor` loading the model, `save_model` writing the directory, in a real
one-process Gloo group. Two stand-ins, both for CUDA-only things:

- `flash_attn` (CUDA kernels; no CPU wheel) is imported at module level by `openrlhf.models`;
  an empty stand-in package answers the import, and any call into it raises.
- `save_model` ends with `torch_dist_barrier_and_cuda_sync()`: the barrier runs (Gloo), the
  `torch.cuda.synchronize()` after it cannot, so that one function is replaced by its barrier.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace


class _AbsentCall:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.name} needs flash_attn (CUDA), which is not installed here")


class _FlashAttnStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "flash_attn" or name.startswith("flash_attn."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def absent(attr: str):
            if attr.startswith("__"):  # __file__ and the like: not there, as for any module
                raise AttributeError(attr)
            return _AbsentCall(f"{spec.name}.{attr}")

        module.__getattr__ = absent
        return module

    def exec_module(self, module) -> None:
        pass


def _install_stand_in() -> None:
    try:
        import flash_attn  # noqa: F401  (a real one, where it exists)
    except ImportError:
        sys.meta_path.insert(0, _FlashAttnStandIn())


def openrlhf_writer():
    """(their DeepspeedStrategy, their Actor class); call inside a Gloo process group."""
    _install_stand_in()
    import torch.distributed as dist
    from openrlhf.models import Actor
    from openrlhf.utils.deepspeed import deepspeed as ds_module
    from openrlhf.utils.deepspeed.deepspeed import DeepspeedStrategy

    ds_module.torch_dist_barrier_and_cuda_sync = dist.barrier  # the CUDA sync cannot run here
    args = SimpleNamespace(
        ds=SimpleNamespace(param_dtype="bf16", zero_stage=2, tensor_parallel_size=1),
        train=SimpleNamespace(),
    )
    return DeepspeedStrategy(seed=0, zero_stage=2, args=args), Actor


def save_hf_checkpoint(strategy, actor, tokenizer, ckpt_path: Path, global_step: int) -> Path:
    """What PolicyModelActor.save_checkpoint does with --ckpt.save_hf --ckpt.disable_ds."""
    tag = f"global_step{global_step}"
    save_path = os.path.join(ckpt_path, f"{tag}_hf")
    strategy.save_model(actor, tokenizer, save_path)
    return Path(save_path)


def their_naming_is_what_we_follow() -> None:
    """The paths above are read from their source, not assumed: fail if a release changes them."""
    import openrlhf

    root = Path(inspect.getfile(openrlhf)).parent
    actor_src = (root / "trainer/ray/ppo_actor.py").read_text()
    trainer_src = (root / "trainer/ppo_trainer.py").read_text()
    assert 'save_path = os.path.join(args.ckpt.path, f"{tag}_hf")' in actor_src
    assert "self.strategy.save_model(" in actor_src
    assert 'tag = f"global_step{global_step}"' in trainer_src
