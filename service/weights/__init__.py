"""The weight plane: following a trainer's weights by reload from disk, HTTP push, LoRA adapter or
torch.distributed transfer, on a plain server and on every Ray replica alike.

updates.py   an update as plain data (reload, push or commit, adapter attach or detach)
core.py      WeightCore: stage(update) -> Staged off the engine worker, apply(staged) on it
limits.py    WeightLimits: every bound of the weight plane, built once in runtime.py
validate.py  names, shapes, dtypes and finiteness, naming the tensor at fault
payload.py   the safetensors byte format (HTTP bodies and files), parsed strictly
sources.py   checkpoints on disk, confined to the allowed directories
staging.py   the one staging book: bucketed pushes held until commit, abort or expiry
apply.py     the copy into the served parameters, on the engine worker
deadline.py  deadlines: threads told to stop, worker jobs called off before they start
body.py      a tensor body read whole, its room reserved before the first byte
adapter.py   PEFT LoRA attach, replace and detach
receive.py   one /update_weights: buckets broadcast by the trainer, validated into staging
transfer.py  the torch.distributed path: join the trainer's group, stage updates, apply at finish
plane.py     the plain server's front: each admin call through the core, within a deadline

Nothing here imports the web framework (tests/layout checks it).
"""

from .body import IncomingBody
from .core import WeightCore
from .limits import WeightLimits
from .plane import WeightPlane
from .transfer import WeightTransfer

__all__ = ["IncomingBody", "WeightCore", "WeightLimits", "WeightPlane", "WeightTransfer"]
