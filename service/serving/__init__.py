"""The model on its one thread, and the one object that owns what is served.

worker.py        the single engine thread every scoring pass and weight swap runs on
served_model.py  the loaded model, its engine and what a score differentiates
slot.py          ServingSlot: the served model, its weight version, readiness, version waits
loading.py       building a ServedModel from settings and warming it up
staleness.py     the guard against scoring on weights that never move while updates are expected
"""

from .served_model import ModelFacts, ServedModel
from .slot import ServingSlot
from .worker import EngineWorker

__all__ = ["EngineWorker", "ModelFacts", "ServedModel", "ServingSlot"]
