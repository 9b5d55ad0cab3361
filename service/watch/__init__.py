"""Following a trainer's checkpoint directory (--watch-dir)."""

from .watcher import CheckpointWatcher

__all__ = ["CheckpointWatcher"]
