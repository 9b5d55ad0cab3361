"""Both deployments plug into the HTTP layer through declared Protocols, and satisfy them.

Plain server ↔ Ray ingress: Runtime ↔ IngressRuntime (api.seams.ServingRuntime), WeightPlane ↔
ClusterWeights (api.seams.WeightFront), Scheduler ↔ ReplicaScheduler (scoring EngineQueue),
ServedModel ↔ ModelView (serving.ModelFacts). Each class is checked member by member against its
Protocol (same names, same parameters, async where the Protocol is), and real instances pass
isinstance where one can be built without a Ray cluster (IngressRuntime needs its ledger actor:
tests/rayserve serves the app built on it).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Protocol

import pytest

from vigor_service.api.seams import ServingRuntime, WeightFront
from vigor_service.engine.reference import ReferenceEngine
from vigor_service.metrics import Metrics
from vigor_service.models.loader import LoadedModel
from vigor_service.rayserve.cluster_weights import ClusterWeights
from vigor_service.rayserve.ingress import IngressRuntime
from vigor_service.rayserve.model_view import ModelView, describe
from vigor_service.rayserve.remote import ReplicaScheduler
from vigor_service.runtime import Runtime, weight_limits_of
from vigor_service.scoring.scheduler import EngineQueue, Scheduler
from vigor_service.serving import ModelFacts, ServedModel, ServingSlot
from vigor_service.settings import Settings
from vigor_service.weights import WeightPlane

from ..tiny_models import tiny_llama

PAIRS = [
    (ServingRuntime, Runtime),
    (ServingRuntime, IngressRuntime),
    (WeightFront, WeightPlane),
    (WeightFront, ClusterWeights),
    (EngineQueue, Scheduler),
    (EngineQueue, ReplicaScheduler),
    (ModelFacts, ServedModel),
    (ModelFacts, ModelView),
]


def protocol_members(proto: type) -> tuple[dict[str, object], set[str]]:
    """(methods and properties by name, plain data members) that `proto` declares."""
    callables, data = {}, set()
    for base in proto.__mro__:
        if base in (Protocol, object) or not getattr(base, "_is_protocol", False):
            continue
        data.update(n for n in inspect.get_annotations(base) if not n.startswith("_"))
        for name, value in base.__dict__.items():
            if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                callables[name] = value
    return callables, data - set(callables)


def assigned_in_init(cls: type) -> set[str]:
    """`self.x = ...` / `self.x: T = ...` targets of cls.__init__ (and tuple targets)."""
    if not inspect.isfunction(cls.__init__):  # object's own: nothing assigned
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls.__init__)))
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self":
                    names.add(t.attr)
    return names


def mismatches(proto: type, cls: type) -> list[str]:
    callables, data = protocol_members(proto)
    assigned = assigned_in_init(cls)
    out = []
    for name in sorted(data):
        if not hasattr(cls, name) and name not in assigned:
            out.append(f"{cls.__name__} lacks attribute {name!r}")
    for name, want in sorted(callables.items()):
        if isinstance(want, property):
            if not hasattr(cls, name) and name not in assigned:
                out.append(f"{cls.__name__} lacks property {name!r}")
            continue
        got = getattr(cls, name, None)
        if got is None or not callable(got):
            out.append(f"{cls.__name__} lacks method {name!r}")
            continue
        if inspect.iscoroutinefunction(want) != inspect.iscoroutinefunction(got):
            out.append(f"{cls.__name__}.{name}: async where the protocol is not, or the reverse")
        params = lambda f: [(p.name, p.kind) for p in inspect.signature(f).parameters.values()]  # noqa: E731
        if params(want) != params(got):
            out.append(
                f"{cls.__name__}.{name}{inspect.signature(got)} is not {inspect.signature(want)}"
            )
    return out


@pytest.mark.parametrize(("proto", "cls"), PAIRS, ids=lambda x: x.__name__)
def test_each_class_declares_what_its_protocol_asks(proto, cls):
    assert mismatches(proto, cls) == []


def test_the_check_finds_a_missing_member_and_a_wrong_signature():
    class HalfFront:
        transfer = None

        async def reload(self, path):  # the wrong parameter name
            return None

    problems = mismatches(WeightFront, HalfFront)
    assert "HalfFront lacks method 'push'" in problems
    assert any(p.startswith("HalfFront.reload(self, path)") for p in problems)
    assert mismatches(EngineQueue, HalfFront)[0] == "HalfFront lacks attribute 'in_flight'"


def served_tiny() -> ServedModel:
    return ServedModel(LoadedModel("tiny", None, tiny_llama(), None), ReferenceEngine())


def test_real_instances_satisfy_the_protocols():
    settings = Settings()
    runtime = Runtime(settings)
    assert isinstance(runtime, ServingRuntime)
    assert isinstance(runtime.weights, WeightFront) and runtime.weights.transfer is not None
    assert isinstance(runtime.scheduler, EngineQueue)
    slot = ServingSlot()
    cluster = ClusterWeights(weight_limits_of(settings), slot, Metrics(), None, None)
    assert isinstance(cluster, WeightFront)
    assert cluster.transfer is None  # not served on Ray: app.py mounts no transfer routes
    assert isinstance(ReplicaScheduler(None, slot), EngineQueue)
    served = served_tiny()
    view = ModelView(describe(served, 1024))
    for model in (served, view):
        assert isinstance(model, ModelFacts)
    assert (view.name, view.engine_name, view.vocab_size, view.max_length) == (
        served.name, served.engine_name, served.vocab_size, served.max_length,
    )  # fmt: skip
    assert view.num_scored_parameters() == served.num_scored_parameters()
    assert view.micro_batches() == served.micro_batches()  # None: the loop engine


def test_create_app_refuses_a_runtime_that_is_not_one():
    from vigor_service.app import create_app

    not_a_runtime: Any = object()
    with pytest.raises(TypeError, match=r"does not satisfy api\.seams\.ServingRuntime"):
        create_app(runtime=not_a_runtime)
