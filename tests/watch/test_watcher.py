"""The checkpoint watcher on a real server (uvicorn on loopback, a tiny Llama): step directories
written next to it are loaded as version = step, and nothing half-written is ever served."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time

import httpx
import pytest
import torch
from safetensors.torch import save_file

from ..servers import until
from ..tiny_models import tiny_llama
from ..weights.helpers import GROUPS, perturbed, save_checkpoint, scores, state, tiny_server

FAST = {"watch_interval_s": 0.05}


@pytest.fixture(scope="module")
def base():
    return tiny_llama(tied=True, dtype=torch.float32)


def weights_of(base, seed: int) -> dict[str, torch.Tensor]:
    return perturbed(state(base), scale=0.02, seed=seed)


def fresh_scores(sd: dict[str, torch.Tensor]) -> list[float]:
    """What a server started on these weights answers (the independent reference)."""
    model = tiny_llama(tied=True, dtype=torch.float32)
    model.load_state_dict(sd)
    with tiny_server(model) as srv:
        return scores(srv.url)[1]


def model_info(url: str) -> dict:
    r = httpx.get(url + "/v1/model", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def safetensors_bytes(sd: dict[str, torch.Tensor], tmp) -> bytes:
    file = tmp / "whole.safetensors"
    tensors = {k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"}
    save_file(tensors, str(file), metadata={"format": "pt"})
    data = file.read_bytes()
    file.unlink()
    return data


def write_slowly(step_dir, data: bytes, chunks: int, pause: float, config: dict, last) -> None:
    """As OpenRLHF writes: the directory and config.json first, then the weights, in place.
    `last` is set just before the last chunk is written: until then the file is incomplete."""
    step_dir.mkdir()
    (step_dir / "config.json").write_text(json.dumps(config))
    size = -(-len(data) // chunks)
    with open(step_dir / "model.safetensors", "wb") as f:
        for i in range(chunks):
            time.sleep(pause)
            if i == chunks - 1:
                last.set()
            f.write(data[i * size : (i + 1) * size])
            f.flush()


def test_a_slowly_written_step_is_loaded_only_when_complete_and_a_request_waits_for_it(
    base, tmp_path
):
    want = weights_of(base, seed=3)
    expected = fresh_scores(want)
    data = safetensors_bytes(want, tmp_path)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    with tiny_server(base, watch_dir=ckpts, allowed_weights_dir=[tmp_path], **FAST) as srv:
        v0, before = scores(srv.url)
        assert v0 == 0
        last = threading.Event()
        writer = threading.Thread(
            target=write_slowly,
            args=(ckpts / "global_step3_hf", data, 6, 0.4, {"model_type": "llama"}, last),
        )
        writer.start()
        # Seen by the watcher, not only on disk: the looks below must never find it absent.
        until(lambda: model_info(srv.url)["watch"]["pending_step"] == 3, "step 3 seen as pending")
        answer: dict = {}

        def score_now():
            t0 = time.monotonic()
            answer["result"] = scores(srv.url)
            answer["done"] = time.monotonic() - t0

        caller = threading.Thread(target=score_now)
        caller.start()
        seen_versions, pending, looks = set(), set(), 0
        while True:  # half-written: never served, always shown as pending
            info = model_info(srv.url)
            answered = "result" in answer
            if last.is_set():  # the answer may postdate the last byte: it proves nothing
                break
            seen_versions.add(info["weight_version"])
            pending.add(info["watch"]["pending_step"])
            assert not answered, "a request was answered while step 3 was being written"
            looks += 1
            time.sleep(0.05)
        caller.join(60)
        writer.join()
        assert looks >= 3  # looked in several times while it was being written
        assert seen_versions == {0}
        assert pending == {3}
        version, got = answer["result"]
        assert version == 3
        assert got == pytest.approx(expected, rel=1e-6)
        assert got != pytest.approx(before, rel=1e-6)
        info = model_info(srv.url)
        assert info["watch"]["loaded_step"] == 3 and info["watch"]["pending_step"] is None
        assert metric(srv.url, "vigor_watch_request_waits_total") >= 1
        assert metric(srv.url, "vigor_watch_loads_total") == 1


def test_a_corrupt_or_wrong_model_step_is_a_visible_error_and_the_old_weights_keep_serving(
    base, tmp_path
):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    step1 = weights_of(base, seed=1)
    with tiny_server(base, watch_dir=ckpts, **FAST) as srv:
        save_checkpoint(step1, ckpts / "global_step1_hf")
        until(lambda: scores(srv.url)[0] == 1, "step 1 served")
        served = scores(srv.url)[1]
        # Another architecture: a hidden size of 16, not 32.
        wrong = tiny_llama(tied=True, dtype=torch.float32)
        wrong_sd = {k: v[..., :16].contiguous() for k, v in state(wrong).items()}
        save_checkpoint(wrong_sd, ckpts / "global_step2_hf")
        info = until(
            lambda: (i := model_info(srv.url))["watch"]["failures"] == 1 and i, "step 2 failed"
        )
        assert "step 2" in info["watch"]["last_error"]
        assert "shape" in info["watch"]["last_error"]
        assert info["weight_version"] == 1 and info["watch"]["pending_step"] is None
        assert metric(srv.url, 'vigor_watch_failures_total{code="weights_rejected"}') == 1
        assert scores(srv.url) == (1, served)  # at once: no wait for a step that failed

        # Bytes that are no safetensors file: refused the same way, step 3.
        (ckpts / "global_step3_hf").mkdir()
        (ckpts / "global_step3_hf" / "model.safetensors").write_bytes(b"\x04" + b"\0" * 7 + b"nope")
        until(lambda: model_info(srv.url)["watch"]["failures"] == 2, "step 3 failed")
        assert scores(srv.url) == (1, served)

        # The next good step is loaded: the watcher did not stall on the bad ones.
        step4 = weights_of(base, seed=4)
        save_checkpoint(step4, ckpts / "global_step4_hf")
        until(lambda: scores(srv.url)[0] == 4, "step 4 served")
        assert scores(srv.url)[1] == pytest.approx(fresh_scores(step4), rel=1e-6)


def test_leftovers_of_an_earlier_run_are_skipped_unless_rewritten(base, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    save_checkpoint(weights_of(base, seed=7), ckpts / "global_step7_hf")
    save_checkpoint(weights_of(base, seed=2), ckpts / "global_step2_hf")
    with tiny_server(base, watch_dir=ckpts, **FAST) as srv:
        v, _ = scores(srv.url)
        time.sleep(0.3)  # several polls
        assert scores(srv.url)[0] == v == 0
        assert model_info(srv.url)["watch"]["skipped_leftovers"] == [2, 7]
        # The new run writes its step 2 over the old one: that is new, and it is loaded.
        new2 = weights_of(base, seed=22)
        shutil.rmtree(ckpts / "global_step2_hf")
        save_checkpoint(new2, ckpts / "global_step2_hf")
        until(lambda: scores(srv.url)[0] == 2, "the rewritten step 2 served")
        assert scores(srv.url)[1] == pytest.approx(fresh_scores(new2), rel=1e-6)


def test_load_existing_takes_the_newest_step_and_delete_removes_it(base, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    step5 = weights_of(base, seed=5)
    save_checkpoint(weights_of(base, seed=4), ckpts / "global_step4_hf")
    save_checkpoint(step5, ckpts / "global_step5_hf")
    settings = dict(watch_dir=ckpts, watch_load_existing=True, watch_delete=True, **FAST)
    with tiny_server(base, **settings) as srv:
        until(lambda: scores(srv.url)[0] == 5, "step 5 served")
        assert scores(srv.url)[1] == pytest.approx(fresh_scores(step5), rel=1e-6)
        assert not (ckpts / "global_step5_hf").exists()
        assert (ckpts / "global_step4_hf").exists()  # older than served: not loaded, kept


def test_a_step_still_growing_after_the_wait_answers_504_checkpoint_pending(base, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    data = safetensors_bytes(weights_of(base, seed=9), tmp_path)
    with tiny_server(base, watch_dir=ckpts, watch_wait_s=1.0, **FAST) as srv:
        scores(srv.url)
        step = ckpts / "global_step9_hf"
        step.mkdir()
        stop = threading.Event()

        def trickle():  # a very slow disk: a few bytes at a time, never done within the wait
            with open(step / "model.safetensors", "wb") as f:
                at = 0
                while not stop.is_set() and at < len(data) - 64:
                    f.write(data[at : at + 16])
                    f.flush()
                    at += 16
                    time.sleep(0.05)

        writer = threading.Thread(target=trickle)
        writer.start()
        try:
            until(lambda: model_info(srv.url)["watch"]["pending_step"] == 9, "step 9 pending")
            t0 = time.monotonic()
            r = httpx.post(srv.url + "/v1/rewards", json={"groups": GROUPS}, timeout=30)
            waited = time.monotonic() - t0
        finally:
            stop.set()
            writer.join()
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "checkpoint_pending"
        assert "step 9" in r.json()["error"]["message"]
        assert waited >= 0.9
        assert model_info(srv.url)["weight_version"] == 0


def test_a_step_that_stops_incomplete_is_given_up_visibly(base, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    data = safetensors_bytes(weights_of(base, seed=6), tmp_path)
    with tiny_server(base, watch_dir=ckpts, watch_wait_s=0.5, **FAST) as srv:
        scores(srv.url)
        (ckpts / "global_step6_hf").mkdir()
        (ckpts / "global_step6_hf" / "model.safetensors").write_bytes(data[: len(data) // 2])
        info = until(
            lambda: (i := model_info(srv.url))["watch"]["failures"] == 1 and i, "step 6 given up"
        )
        assert "unchanged" in info["watch"]["last_error"]
        assert "bytes written" in info["watch"]["last_error"]
        assert metric(srv.url, 'vigor_watch_failures_total{code="checkpoint_incomplete"}') == 1
        assert scores(srv.url)[0] == 0  # old weights serve; no request waits for it any more
        # The trainer finishes it after all: its files changed, so it is tried again.
        (ckpts / "global_step6_hf" / "model.safetensors").write_bytes(data)
        until(lambda: scores(srv.url)[0] == 6, "step 6 served once complete")


def test_the_watch_dir_must_lie_under_the_allowed_weights_dir(tmp_path):
    from pydantic import ValidationError

    from vigor_service.settings import Settings

    with pytest.raises(ValidationError, match="outside --allowed-weights-dir"):
        Settings(watch_dir=tmp_path / "ckpts", allowed_weights_dir=[tmp_path / "other"])
    with pytest.raises(ValidationError, match=r"\{step\} once"):
        Settings(watch_pattern="checkpoints")


def test_verl_layout_with_its_tracker_file_loads_once_the_tracker_names_the_step(base, tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    step2 = weights_of(base, seed=12)
    settings = dict(watch_dir=ckpts, watch_pattern="verl", watch_ready="tracker", **FAST)
    with tiny_server(base, **settings) as srv:
        scores(srv.url)
        save_checkpoint(step2, ckpts / "global_step_2" / "actor" / "huggingface")
        (ckpts / "latest_checkpointed_iteration.txt").write_text("1")
        # A poll may first see step 2 half-written ("no model.safetensors yet"); what must follow
        # is step 2 held back by the tracker alone, and never loaded while the tracker says 1.
        until(
            lambda: (
                (w := model_info(srv.url)["watch"])["pending_step"] == 2
                and "latest_checkpointed_iteration.txt names step 1" in (w["pending_reason"] or "")
            ),
            "step 2 pending on the tracker",
        )
        time.sleep(0.3)
        assert model_info(srv.url)["weight_version"] == 0  # complete files, tracker not yet
        (ckpts / "latest_checkpointed_iteration.txt").write_text("2")
        until(lambda: model_info(srv.url)["weight_version"] == 2, "step 2 served")
        assert scores(srv.url)[1] == pytest.approx(fresh_scores(step2), rel=1e-6)


def test_vigor_serve_refuses_a_watch_dir_outside_the_allowed_dirs_before_loading(tmp_path, capsys):
    from vigor_service.cli import main

    code = main(
        ["--watch-dir", str(tmp_path / "ckpt"), "--allowed-weights-dir", str(tmp_path / "other")]
    )
    assert code == 2
    assert "outside --allowed-weights-dir" in capsys.readouterr().err
