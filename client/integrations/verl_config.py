"""Our keys read out of a verl config: an OmegaConf node, a dict or an attribute tree."""

from __future__ import annotations

from typing import Any


def config_value(config: Any, dotted: str, default: Any = None) -> Any:
    """`config.a.b.c` for `dotted="a.b.c"`, or `default` where any part is missing or null."""
    node = config
    for part in dotted.split("."):
        getter = getattr(node, "get", None)
        node = getter(part) if getter is not None else getattr(node, part, None)
        if node is None:
            return default
    return node
