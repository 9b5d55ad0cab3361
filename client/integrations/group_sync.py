"""Sending a trainer's weights over torch.distributed, with HTTP as the fallback (needs torch).

The trainer joins the servers into a process group of its own (`vigor_client.distributed.
WeightSender`: vLLM's four calls, start → update_weights + broadcast → finish; NCCL when the
trainer and every server have CUDA, Gloo otherwise) and broadcasts the trainable parameters
straight from their memory: nothing is serialized or framed, and one broadcast reaches every
replica. The version is the caller's, as on the HTTP path.

When the group cannot form (torch.distributed missing, a server that cannot reach this host, a
backend a server does not have) the reason is logged at WARNING, kept in `fallback_reason`, and
every later send goes over HTTP (`sync_weights`): the run goes on at the same weights, only
slower. A group lost mid-run (a broadcast or control call that failed) sends that step over
HTTP, and the next step forms a new group (or falls back for good if it cannot). A server that
received the tensors and refused them (422) is raised: HTTP would be refused the same way. A
peft model goes over HTTP (the adapter alone is smaller than any group set-up; the server's
transfer path takes full parameter names only).
"""

from __future__ import annotations

import logging
from typing import Any

from .weights import is_peft, sync_weights, trainable_state_dict, unwrap

log = logging.getLogger(__name__)

HTTP = "http"


def _tensors(model: Any) -> dict[str, Any]:
    return model if isinstance(model, dict) else trainable_state_dict(model)


def server_urls(client: Any) -> list[str]:
    """The URLs a VigorClient or VigorReplicas talks to."""
    urls = getattr(client, "urls", None)
    return list(urls) if urls is not None else [client.base_url]


class GroupSync:
    """Send weights to the servers behind `client` over a process group, or else over HTTP.

    `options` go to `WeightSender` (`backend`, `master_address`, `master_port`, `timeout_s`);
    its tokens are the client's. `push_kwargs` go to the HTTP fallback's `push_weights`.
    """

    def __init__(self, client: Any, options: dict | None = None, **push_kwargs: Any) -> None:
        self.client = client
        self.options = dict(options or {})
        self.push_kwargs = push_kwargs
        self.sender: Any = None
        self.backend: str | None = None  # the group's, once formed
        self.fallback_reason: str | None = None
        self._told_peft = False

    def send(self, model: Any, version: int) -> str:
        """Make the servers hold `model`'s trainable weights (or a dict of tensors, e.g.
        gathered from shards) as `version`; the route taken (`gloo`, `nccl` or `http`)."""
        model = model if isinstance(model, dict) else unwrap(model)
        if is_peft(model):
            if not self._told_peft:
                self._told_peft = True
                log.info("a peft policy: its LoRA adapter goes over HTTP, not the process group")
            return self._http(model, version)
        if self.sender is None and self.fallback_reason is None:
            self._join()
        if self.sender is None:
            return self._http(model, version)
        return self._over_group(model, version)

    def _join(self) -> None:
        try:
            from ..distributed import WeightSender  # imports torch.distributed

            tokens = self.client.options() if hasattr(self.client, "options") else {}
            sender = WeightSender(
                server_urls(self.client),
                admin_token=tokens.get("admin_token"),
                api_token=tokens.get("api_token"),
                **self.options,
            )
            try:
                sender.init()
            except BaseException:
                sender.close()
                raise
        except Exception as exc:  # logged and kept: the run goes on over HTTP
            self.fallback_reason = f"{type(exc).__name__}: {exc}"
            log.warning(
                "the weight-transfer group with %s could not form, so weights go over HTTP "
                "for the rest of this run: %s",
                ", ".join(server_urls(self.client)),
                self.fallback_reason,
            )
            return
        self.sender, self.backend = sender, sender.group.backend
        log.info("weights go over a %s group with %d server(s)", self.backend, len(sender.urls))

    def _over_group(self, model: Any, version: int) -> str:
        from ..distributed import GroupError, TransferError

        sender = self.sender
        try:
            sender.send(_tensors(model), version, full=False)
        except (GroupError, TransferError) as exc:
            if isinstance(exc, TransferError) and exc.refused:
                raise  # the servers received everything and refused it: so would HTTP
            log.warning(
                "sending weights v%d over the process group failed, so this step goes over "
                "HTTP and the next one forms a new group: %s",
                version,
                exc,
            )
            # Left on both ends (a server may still think it is in the old group, e.g. after
            # it was closed there): the next send joins afresh, or falls back for good.
            self.close()
            return self._http(model, version)
        return self.backend

    def _http(self, model: Any, version: int) -> str:
        if isinstance(model, dict):
            options = {"progress": False, **self.push_kwargs}
            self.client.push_weights(model, version=version, full=False, **options)
        else:
            sync_weights(self.client, model, version, **self.push_kwargs)
        return HTTP

    def close(self) -> None:
        if self.sender is not None:
            sender, self.sender = self.sender, None
            sender.close()


__all__ = ["HTTP", "GroupSync", "server_urls"]
