"""The weight plane: following a trainer's weights by reload from disk, HTTP push, or LoRA adapter.

validate.py  names, shapes, dtypes and finiteness, naming the tensor at fault
payload.py   the safetensors byte format (HTTP bodies and files), parsed strictly
sources.py   checkpoints on disk, confined to the allowed directories
staging.py   bucketed pushes held until commit, abort or expiry
apply.py     the swap on the engine worker
bounded.py   deadlines: threads told to stop, worker jobs called off before they start
adapter.py   PEFT LoRA attach, replace and detach
receive.py   one /update_weights: buckets broadcast by the trainer, validated into staging
transfer.py  the torch.distributed path: join the trainer's group, stage updates, apply at finish
plane.py     each admin operation end to end, within a deadline
"""

from .bounded import IncomingBody
from .plane import WeightPlane
from .transfer import WeightTransfer

__all__ = ["IncomingBody", "WeightPlane", "WeightTransfer"]
