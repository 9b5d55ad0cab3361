"""Every exception class defined in service/ leaves the app with its own status and stable code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import httpx
import pytest

import vigor_service
from vigor_service import errors as e
from vigor_service.api.body_limit import BodyTooLarge
from vigor_service.engine.errors import UnsupportedModelError
from vigor_service.engine.head import NotChunkable
from vigor_service.serve import StartError
from vigor_service.weights.sources import Cancelled

from ..weights.helpers import runtime_of, tiny_server

# What a client sees for each class: written out here, not derived from the server's table.
EXPECTED = {
    e.VigorServiceError: (500, "internal_error", lambda c: c("boom")),
    e.InvalidInputError: (422, "invalid_request", lambda c: c([e.InputProblem("x", "bad")])),
    e.NotReadyError: (503, "not_ready", lambda c: c("loading")),
    e.ModelLoadError: (503, "model_load_failed", lambda c: c("no such model")),
    e.StaleWeightsError: (409, "stale_weight_version", lambda c: c("old", current_version=1)),
    e.VersionConflictError: (409, "version_conflict", lambda c: c("old", current_version=1)),
    e.LimitExceededError: (413, "limit_exceeded", lambda c: c("too big")),
    BodyTooLarge: (413, "limit_exceeded", lambda c: c()),
    e.OverloadedError: (429, "overloaded", lambda c: c("full", retry_after=2.0)),
    e.DeadlineExceededError: (504, "deadline_exceeded", lambda c: c("late")),
    e.ClientGoneError: (499, "client_disconnected", lambda c: c("left")),
    e.BodyTimeoutError: (408, "body_timeout", lambda c: c("stopped arriving")),
    Cancelled: (504, "deadline_exceeded", lambda c: c()),
    e.GroupIncompleteError: (504, "group_incomplete", lambda c: c("3 of 4 arrived")),
    e.CheckpointPendingError: (504, "checkpoint_pending", lambda c: c("step 3 not loaded")),
    e.WeightsRejectedError: (422, "weights_rejected", lambda c: c(["tensor 'w': bad"])),
    e.PathNotAllowedError: (403, "path_not_allowed", lambda c: c("/etc")),
    e.UploadNotFoundError: (404, "upload_not_found", lambda c: c("u1")),
    e.NoAdapterError: (404, "no_adapter", lambda c: c("none loaded")),
    e.TransferStateError: (409, "transfer_state", lambda c: c("no group")),
    e.TransferFailedError: (502, "transfer_failed", lambda c: c("peer closed")),
    UnsupportedModelError: (500, "unsupported_model", lambda c: c("module Foo has no rule")),
}


# Raised before the app exists (`vigor-serve` prints them and exits 1), or caught where it is
# raised (the engine rescores a model whose head cannot be chunked): never an HTTP answer.
OUTSIDE_THE_APP = {StartError, NotChunkable}

VALID = {"groups": [{"prompt_ids": [1, 2], "completion_ids": [[3, 4]]}]}


def exception_classes() -> set[type]:
    """Every exception class whose home module is inside vigor_service."""
    found = set()
    for info in pkgutil.walk_packages(vigor_service.__path__, "vigor_service."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.add(obj)
    return found


def test_the_table_covers_every_exception_class_in_the_service():
    assert exception_classes() == set(EXPECTED) | OUTSIDE_THE_APP


def test_each_class_raised_while_scoring_answers_its_status_and_code():
    with tiny_server() as srv:
        pipeline = runtime_of(srv).pipeline
        for cls, (status, code, make) in EXPECTED.items():
            exc = make(cls)

            async def fail(request, gone=None, caller=None, exc=exc):
                raise exc

            pipeline.score = fail
            r = httpx.post(srv.url + "/v1/rewards", json=VALID, timeout=30)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), cls
            if status == 429:
                assert r.headers["retry-after"] == "2"
            if issubclass(cls, e.StaleWeightsError):  # 409 transfer_state is about call order
                assert r.json()["error"]["current_weight_version"] == 1


@pytest.mark.parametrize("status", sorted({s for s, _, _ in EXPECTED.values()}))
def test_no_known_class_answers_the_bare_internal_error(status):
    for cls, (s, code, _) in EXPECTED.items():
        if s == status and cls is not e.VigorServiceError:
            assert code != "internal_error", cls
