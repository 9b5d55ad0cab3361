"""Weights from a trainer to vigor-reward servers over torch.distributed (needs torch).

    from vigor_client.distributed import WeightSender

    with WeightSender(["http://10.0.0.2:8000", "http://10.0.0.3:8000"]) as sender:
        sender.send(model, version=step)  # after each optimizer step

group.py   the process group both ends join: a TCPStore and Gloo or NCCL, never the default group
pack.py    tensors into the byte buckets that are broadcast, and back
control.py the HTTP control calls to every server, in parallel, failures per server
sender.py  the trainer's side: init, then each update start → update_weights + broadcast → finish
"""

try:
    import torch.distributed  # noqa: F401
except ImportError as exc:  # the base client is torch-free; this part is not
    raise ImportError(
        "vigor_client.distributed sends weights over torch.distributed and needs torch: "
        "pip install 'vigor-reward[distributed]' (or install torch yourself)"
    ) from exc

from .control import TransferError
from .group import GroupError, StatelessGroup
from .sender import WeightSender

__all__ = ["GroupError", "StatelessGroup", "TransferError", "WeightSender"]
