"""A request's gradient-norm estimator: the server default filled in, checked, and handed on.

The wire spells it as `{"kind": "exact"}` or `{"kind": "sketch", "k": ..., "seed": ...}`
(vigor_client.schema); the engine takes `Sketch(k, seed)` or None (exact). The loop engine has
no sketch: such a request is refused before it queues, never scored exactly in silence.
"""

from __future__ import annotations

from vigor_client.schema import ExactEstimator, RewardsRequest, SketchEstimator

from ..engine.types import Sketch
from ..errors import InputProblem, InvalidInputError

EXACT = ExactEstimator(kind="exact")


def resolved(request: RewardsRequest, default: ExactEstimator | SketchEstimator) -> RewardsRequest:
    """The request with the estimator it is scored by spelled out (a held group keeps it)."""
    if request.estimator is not None:
        return request
    return request.model_copy(update={"estimator": default})


def check_engine(estimator: ExactEstimator | SketchEstimator | None, engine_name: str) -> None:
    if isinstance(estimator, SketchEstimator) and engine_name != "batched":
        raise InvalidInputError(
            [
                InputProblem(
                    "estimator",
                    f"the sketch estimator needs the batched engine; this server runs the "
                    f"{engine_name!r} engine, which computes exact norms only: send "
                    '{"kind": "exact"} or omit estimator',
                )
            ]
        )


def for_engine(estimator: ExactEstimator | SketchEstimator | None) -> Sketch | None:
    if isinstance(estimator, SketchEstimator):
        return Sketch(estimator.k, estimator.seed)
    return None
