"""No silent base weights: scoring that keeps arriving at one version while updates are expected
is logged, counted in /metrics and shown in /v1/model, until the version moves."""

from __future__ import annotations

import logging
import time

import httpx
import torch

from vigor_service.serving.staleness import StalenessGuard

from ..tiny_models import tiny_llama
from ..watch.test_watcher import metric, model_info
from ..weights.helpers import admin, perturbed, scores, state, tiny_server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_both_the_count_and_the_time_must_pass_and_a_new_version_clears_it(caplog):
    clock, warned = Clock(), []
    guard = StalenessGuard(True, 3, 60.0, on_stale=lambda: warned.append(1), clock=clock)
    for _ in range(10):  # many calls, little time: a fast first step is not stale
        guard.observe(0)
    assert not guard.stale
    clock.now += 61
    with caplog.at_level(logging.WARNING):
        guard.observe(0)
    assert guard.stale and warned == [1]
    assert "weight_version 0 (the weights loaded at start)" in caplog.text
    guard.observe(0)
    assert warned == [1]  # once per version, not once per call
    assert guard.status(0).stale and guard.status(0).requests_at_version == 12
    guard.observe(1)
    assert not guard.stale and guard.status(1).requests_at_version == 1
    clock.now += 1000
    guard.observe(1)  # long, but only two calls at version 1
    assert not guard.stale


def test_without_expected_updates_nothing_is_flagged():
    clock = Clock()
    guard = StalenessGuard(False, 1, 1.0, clock=clock)
    for _ in range(5):
        clock.now += 10
        guard.observe(0)
    assert not guard.stale and not guard.status(0).expects_updates


def test_on_a_real_server_the_warning_shows_in_metrics_and_model_info_until_weights_move():
    base = tiny_llama(tied=True, dtype=torch.float32)
    settings = dict(expect_weight_updates=True, stale_after_requests=3, stale_after_s=2.0)
    with tiny_server(base, **settings) as srv:
        scores(srv.url)
        t0 = time.monotonic()  # the guard's clock started before the first answer left
        scores(srv.url)  # fewer calls than the bound: never stale, however long they took
        assert model_info(srv.url)["staleness"]["stale"] is False
        assert metric(srv.url, "vigor_weights_stale") == 0
        time.sleep(max(0.0, 2.1 - (time.monotonic() - t0)))
        scores(srv.url)
        info = model_info(srv.url)["staleness"]
        assert info["stale"] is True and info["expects_updates"] is True
        assert "no" in info["warning"] and "weight_version 0" in info["warning"]
        assert metric(srv.url, "vigor_stale_weight_warnings_total") == 1
        assert metric(srv.url, "vigor_weights_stale") == 1
        scores(srv.url)
        assert metric(srv.url, "vigor_stale_weight_requests_total") == 2
        # The trainer's update arrives: the flag clears at the next scoring call.
        from safetensors.torch import save

        new = perturbed(state(base), seed=3)
        body = save({k: v.contiguous() for k, v in new.items() if k != "lm_head.weight"})
        r = admin(srv.url, "POST", "/admin/weights/push", content=body)
        assert r.status_code == 200, r.text
        # Cleared as soon as the version moves, before any scoring call.
        assert model_info(srv.url)["staleness"]["stale"] is False
        assert metric(srv.url, "vigor_weights_stale") == 0
        assert scores(srv.url)[0] == 1
        assert model_info(srv.url)["staleness"]["stale"] is False
        assert metric(srv.url, "vigor_weights_stale") == 0
        assert metric(srv.url, "vigor_stale_weight_warnings_total") == 1


def test_a_server_not_told_to_expect_updates_never_warns():
    with tiny_server(stale_after_requests=1, stale_after_s=0.01) as srv:
        scores(srv.url)
        time.sleep(0.05)
        scores(srv.url)
        assert model_info(srv.url)["staleness"]["stale"] is False
        assert metric(srv.url, "vigor_stale_weight_warnings_total") == 0
        assert httpx.get(srv.url + "/metrics").status_code == 200
