"""The Ray Serve application on a real local Ray: 2 scoring replicas at num_cpus=0.5.

In file order, on one application: the same API and scores as a plain `vigor-serve`; 16 clients
scoring while weights are pushed; a replica killed under load; a replica added after two pushes;
bucketed uploads; a reload from a checkpoint directory and a LoRA adapter attached and detached.
Each scored answer is checked against the plain server's scores for the version it names, so an
answer on weights half-way between two versions, or on a version never pushed, fails.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from safetensors.torch import load_file, save, save_file

from ..servers import until
from .conftest import ray, score

pytestmark = pytest.mark.slow

GROUPS = [
    {"prompt": "What is 2 + 2?", "completions": ["4", "It is four.", "5, I think", "2 + 2 = 4"]},
    {"prompt": "Name a colour.", "completions": ["Blue.", "red", "The sky's colour: blue"]},
    {"prompt": "Say hello", "completions": ["Hello!", "hi there", "Good morning to you"]},
    {"prompt": "Count to three", "completions": ["1 2 3", "one, two, three", "3"]},
]
REPLICA_PREFIX = "SERVE_REPLICA::vigor#ScoringReplica#"
TRANSFER_CALLS = [
    ("POST", "/init_weight_transfer_engine", {"init_info": {"master_address": "127.0.0.1",
                                                             "master_port": 29500,
                                                             "rank_offset": 1, "world_size": 2}}),
    ("POST", "/start_weight_update", {}),
    ("POST", "/update_weights", {"update_info": {"names": [], "dtype_names": [], "shapes": []}}),
    ("POST", "/finish_weight_update", {}),
    ("POST", "/abort_weight_update", None),
    ("POST", "/close_weight_transfer_engine", None),
    ("GET", "/weight_transfer_status", None),
    ("GET", "/get_world_size", None),
]  # fmt: skip


def weights_for(model_dir, version: int) -> bytes:
    """A partial push: two tensors moved away from the checkpoint, differently per version."""
    base = load_file(str(model_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(version)
    out = {}
    for name, scale in (("model.norm.weight", 0.2), ("model.layers.0.mlp.down_proj.weight", 0.05)):
        t = base[name].double()
        out[name] = t + scale * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return save(out)


def push(url: str, body: bytes, version: int) -> dict:
    r = httpx.post(
        f"{url}/admin/weights/push?version={version}",
        content=body,
        headers={"content-type": "application/octet-stream"},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()


def scores_of(url: str) -> list[list[float]]:
    r = score(url, GROUPS)
    assert r.status_code == 200, r.text
    return [g["scores"] for g in r.json()["groups"]]


def close(a: list[float], b: list[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


class Reference:
    """The plain server's scores of every group, per weight version (pushed to it first)."""

    def __init__(self, plain_url: str, model_dir) -> None:
        self.url, self.model_dir = plain_url, model_dir
        self.scores = {0: scores_of(plain_url)}
        self.pushes: dict[int, bytes] = {}

    def add(self, version: int) -> bytes:
        body = weights_for(self.model_dir, version)
        assert push(self.url, body, version)["weight_version"] == version
        self.scores[version] = scores_of(self.url)
        self.pushes[version] = body
        return body


@pytest.fixture(scope="module")
def reference(plain_server, tiny_chat_model_dir):
    return Reference(plain_server.url, tiny_chat_model_dir)


class Clients:
    """n threads scoring one random group per request, each asking for the version last pushed."""

    def __init__(self, url: str, reference: Reference, n: int = 16) -> None:
        self.url, self.reference, self.n = url, reference, n
        self.announced = max(reference.scores) if reference.scores else 0
        self.stop = threading.Event()
        self.answers: list[tuple[int, int, dict]] = []  # (asked version, group, response)
        self.errors: list[str] = []
        self._pool = ThreadPoolExecutor(n)

    def _loop(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=120) as http:
            while not self.stop.is_set():
                i, asked = rng.randrange(len(GROUPS)), self.announced
                try:
                    r = http.post(
                        self.url + "/v1/rewards",
                        json={"groups": [GROUPS[i]], "min_weight_version": asked},
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code}: {r.text[:300]}")
                else:
                    self.answers.append((asked, i, r.json()))

    def __enter__(self) -> Clients:
        self._futures = [self._pool.submit(self._loop, k) for k in range(self.n)]
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for f in self._futures:
            f.result()
        self._pool.shutdown()

    def until_answered(self, version: int, count: int = 1) -> None:
        """Until `count` answers at `version` came back: the clients are scoring on it (or one
        failed: `check` names it)."""

        def answered() -> bool:
            at = sum(body["weight_version"] == version for _, _, body in self.answers)
            return bool(self.errors) or at >= count

        until(answered, f"{count} answer(s) at version {version}", within_s=60)

    def check(self) -> set[int]:
        """0 errors; every answer at a pushed version, not below the one asked, on its weights."""
        assert not self.errors, self.errors[:5]
        assert self.answers
        seen = set()
        for asked, i, body in self.answers:
            v = body["weight_version"]
            assert v in self.reference.scores, f"version {v} was never pushed"
            assert v >= asked, f"asked for at least {asked}, answered at {v}"
            assert close(body["groups"][0]["scores"], self.reference.scores[v][i]), (v, i, body)
            seen.add(v)
        return seen


def replica_names() -> set[str]:
    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(REPLICA_PREFIX)
    }


def agreeing(ledger, count: int, version: int):
    """The replicas when `count` are running, the ledger counts exactly those live, and all
    report `version` with one checksum of their weights."""
    running = {n.removeprefix(REPLICA_PREFIX) for n in replica_names()}
    replicas = ray.get(ledger.replicas.remote())
    sums = {s for v, s in replicas.values() if v == version and s is not None and s[0] == version}
    ok = len(running) == count and set(replicas) == running and len(sums) == 1
    return replicas if ok and all(v == version for v, _ in replicas.values()) else None


def test_same_api_and_scores_as_plain_server(ray_app, plain_server, reference):
    """The same API, less the vLLM transfer routes (not served on Ray, issue 24)."""
    plain = httpx.get(plain_server.url + "/openapi.json").json()
    on_ray = httpx.get(ray_app + "/openapi.json").json()
    transfer = {p for _, p, _ in TRANSFER_CALLS}
    assert transfer <= set(plain["paths"])
    assert on_ray["paths"] == {k: v for k, v in plain["paths"].items() if k not in transfer}
    assert {k: v for k, v in on_ray.items() if k not in ("paths", "components")} == {
        k: v for k, v in plain.items() if k not in ("paths", "components")
    }
    ray_schemas, plain_schemas = on_ray["components"]["schemas"], plain["components"]["schemas"]
    assert all(plain_schemas[name] == schema for name, schema in ray_schemas.items())
    for got, want in zip(scores_of(ray_app), reference.scores[0], strict=True):
        assert close(got, want)
    info, plain_info = (httpx.get(url + "/v1/model").json() for url in (ray_app, plain_server.url))
    # The stale guard's clock and call count depend on each server's history, not on its kind.
    for answer in (info, plain_info):
        for moving in ("seconds_at_version", "requests_at_version"):
            (answer.get("staleness") or {}).pop(moving, None)
    assert info == plain_info


def test_the_sketch_estimator_reaches_the_replicas(ray_app, plain_server, reference):
    """A request's estimator travels ingress → replica engine, and is echoed; same numbers as
    the plain server's at the same version (float64 model, same seed)."""
    sketch = {"kind": "sketch", "k": 16, "seed": 7}
    answers = [score(url, GROUPS, estimator=sketch) for url in (ray_app, plain_server.url)]
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    on_ray, plain = (r.json() for r in answers)
    assert on_ray["estimator"] == plain["estimator"] == sketch
    assert on_ray["weight_version"] == plain["weight_version"] == 0
    for got, want, exact in zip(
        on_ray["groups"], plain["groups"], reference.scores[0], strict=True
    ):
        assert close(got["scores"], want["scores"])
        assert not close(got["scores"], exact)  # a sketch, not exact numbers relabelled


def test_groups_assembled_at_the_ingress(ray_app, reference):
    """One sample per request (group_size): scored whole, together, as the plain server does."""
    group = GROUPS[0]
    n = len(group["completions"])

    def one(j: int) -> dict:
        sample = {"id": "g0", "prompt": group["prompt"], "completions": [group["completions"][j]]}
        r = score(ray_app, [{**sample, "group_size": n}])
        assert r.status_code == 200, r.text
        return r.json()["groups"][0]

    with ThreadPoolExecutor(n) as pool:
        rows = list(pool.map(one, range(n)))
    got = [row["scores"][0] for row in rows]
    assert close(got, reference.scores[0][0])
    plain_rewards = score(reference.url, [group]).json()["groups"][0]["rewards"]
    assert [row["rewards"][0] for row in rows] == plain_rewards


def test_pushes_under_load_answer_on_one_announced_version(ray_app, reference, ledger):
    with Clients(ray_app, reference) as clients:
        for version in (1, 2, 3):
            clients.until_answered(version - 1)  # each push lands under load
            body = reference.add(version)
            assert push(ray_app, body, version)["weight_version"] == version
            clients.announced = version
        clients.until_answered(3)
    seen = clients.check()
    assert 3 in seen
    until(lambda: agreeing(ledger, 2, 3), "both replicas at version 3", within_s=30, every_s=0.5)


def test_killed_replica_is_replaced_at_the_committed_version(ray_app, reference, ledger):
    before = replica_names()
    assert len(before) == 2
    victim = sorted(before)[0]
    with Clients(ray_app, reference) as clients:
        clients.until_answered(3)  # the kill lands under load
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        until(
            lambda: len(replica_names() - before) == 1,
            "a replacement replica",
            within_s=120,
            every_s=0.5,
        )
        replicas = until(
            lambda: agreeing(ledger, 2, 3),
            "the replacement at version 3",
            within_s=120,
            every_s=0.5,
        )
    assert clients.check() == {3}
    new = (replica_names() - before).pop().removeprefix(REPLICA_PREFIX)
    assert new in replicas


def test_replica_added_after_two_pushes_serves_the_second(ray_app, reference, ledger):
    from vigor_service.rayserve.app import scale

    before = replica_names()
    for version in (4, 5):
        assert push(ray_app, reference.add(version), version)["weight_version"] == version
    scale(3)
    replicas = until(
        lambda: agreeing(ledger, 3, 5), "three replicas at version 5", within_s=180, every_s=0.5
    )
    added = (replica_names() - before).pop().removeprefix(REPLICA_PREFIX)
    assert added in replicas
    assert replica_names() >= before  # added beside the others, none replaced
    with Clients(ray_app, reference, n=6) as clients:
        clients.until_answered(5, count=3 * 6)  # three rounds of the six clients, at least
    assert clients.check() == {5}


def test_bucketed_upload_and_a_refused_push(ray_app, reference, ledger):
    """Buckets staged, then one commit on every replica; a refused push changes nothing anywhere."""
    from safetensors.torch import load

    tensors = load(reference.add(6))
    upload = httpx.post(ray_app + "/admin/weights/uploads").json()["upload_id"]
    for name, tensor in tensors.items():
        r = httpx.post(
            f"{ray_app}/admin/weights/uploads/{upload}/buckets",
            content=save({name: tensor}),
            headers={"content-type": "application/octet-stream"},
        )
        assert r.status_code == 200, r.text
    assert r.json()["tensors"] == len(tensors)
    r = httpx.post(f"{ray_app}/admin/weights/uploads/{upload}/commit", json={"version": 6})
    assert r.status_code == 200 and r.json()["weight_version"] == 6, r.text
    until(lambda: agreeing(ledger, 3, 6), "three replicas at version 6", within_s=60, every_s=0.5)
    for got, want in zip(scores_of(ray_app), reference.scores[6], strict=True):
        assert close(got, want)

    bad = save({"model.norm.weight": torch.ones(3, dtype=torch.float64)})
    r = httpx.post(
        f"{ray_app}/admin/weights/push?version=7",
        content=bad,
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 422 and "model.norm.weight" in r.text, r.text
    assert httpx.get(ray_app + "/v1/model").json()["weight_version"] == 6
    assert agreeing(ledger, 3, 6)


def test_reload_and_adapter_through_the_ingress(
    ray_app, plain_server, ledger, weights_dir, tiny_chat_model_dir
):
    """Reload from a directory, attach a pushed adapter, detach it, attach one from a directory:
    every replica follows, and each step scores as the plain server given the same calls."""
    from peft import LoraConfig

    from vigor_client import VigorClient

    ckpt = weights_dir / "step-8"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(weights_for(tiny_chat_model_dir, 8))
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    state = lora_state(lora, tiny_chat_model_dir)
    on_disk = weights_dir / "adapter-11"
    lora.save_pretrained(on_disk)
    save_file(state, str(on_disk / "adapter_model.safetensors"))
    n = len(replica_names())
    with (
        VigorClient(ray_app, timeout=300) as on_ray,
        VigorClient(plain_server.url, timeout=300) as plain,
    ):
        steps = [
            ("reload", lambda c: c.reload_weights(str(ckpt), 8, full=False)),
            ("adapter", lambda c: c.load_adapter(state, 9, config=lora, name="step-9")),
            ("detach", lambda c: c.unload_adapter(10)),
            ("adapter from a directory", lambda c: c.load_adapter(str(on_disk), 11)),
        ]
        seen = []
        for what, call in steps:
            want, got = call(plain), call(on_ray)
            assert got.weight_version == want.weight_version, what
            assert got.adapter == want.adapter, what
            until(
                lambda v=got.weight_version: agreeing(ledger, n, v),
                f"{what} everywhere",
                within_s=60,
                every_s=0.5,
            )
            now = scores_of(ray_app)
            for g, w in zip(now, scores_of(plain_server.url), strict=True):
                assert close(g, w), what
            seen.append(now)
            info = httpx.get(ray_app + "/v1/model").json()
            assert info["adapter"] == got.adapter and info["weight_version"] == got.weight_version
    reloaded, adapted, detached, from_disk = seen
    assert adapted != reloaded  # the adapter changed the scores
    assert all(close(a, b) for a, b in zip(detached, reloaded, strict=True))
    assert all(close(a, b) for a, b in zip(from_disk, adapted, strict=True))


def lora_state(lora, model_dir) -> dict[str, torch.Tensor]:
    """Non-zero LoRA weights for the tiny chat model (a zero B would score as no adapter)."""
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    shapes = get_peft_model_state_dict(get_peft_model(skeleton, lora))
    gen = torch.Generator().manual_seed(9)
    return {
        k: 0.05 * torch.randn(v.shape, generator=gen, dtype=torch.float64)
        for k, v in shapes.items()
    }


def test_transfer_routes_are_not_served_on_ray_and_say_so(ray_app, plain_server, ledger):
    """The vLLM transfer is not served by the Ray ingress: every one of its paths answers 404
    naming the deployment and what to use instead (on main, start and finish answered 500), none
    is in the OpenAPI schema, and nothing moves; the plain server serves the same paths."""
    version = httpx.get(ray_app + "/v1/model").json()["weight_version"]
    for method, path, body in TRANSFER_CALLS:
        r = httpx.request(method, ray_app + path, json=body, timeout=60)
        assert r.status_code == 404, (path, r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] == "not_found", path
        assert "not served by this deployment (vigor-serve --ray)" in error["message"], path
        assert "/admin/weights/push" in error["message"], path
    paths = httpx.get(ray_app + "/openapi.json").json()["paths"]
    assert not {p for _, p, _ in TRANSFER_CALLS} & set(paths)
    assert "/admin/weights/push" in paths
    assert httpx.get(ray_app + "/v1/model").json()["weight_version"] == version
    _, live = ray.get(ledger.state.remote())
    assert agreeing(ledger, live, version)

    # The plain server serves them: a status, and an out-of-order start named as such.
    status = httpx.get(plain_server.url + "/weight_transfer_status")
    assert status.status_code == 200 and status.json()["state"] == "closed", status.text
    start = httpx.post(plain_server.url + "/start_weight_update", json={})
    assert start.status_code == 409 and start.json()["error"]["code"] == "transfer_state"


def test_the_proxy_closes_connections_that_never_finish_their_headers(ray_app):
    """--header-timeout-s (10 s here) holds on Ray Serve's proxy too, as on the plain server:
    unfinished headers, no bytes at all, or headers trickled a byte at a time. On main such a
    connection stayed open for 100 s and more (issue 26 item 8)."""
    port = int(ray_app.rsplit(":", 1)[1])
    partial = socket.create_connection(("127.0.0.1", port), timeout=10)
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never end
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)  # sends nothing
    trickle = socket.create_connection(("127.0.0.1", port), timeout=10)
    trickled = threading.Event()

    def drip() -> None:
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X" * 200:
                trickle.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            trickled.set()  # the server closed it while it was still sending

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    try:
        for sock in (partial, idle):
            sock.settimeout(40)  # the test's patience; the bound is the 10 s header timeout
            assert sock.recv(1024) == b""  # closed by the proxy (recv would time out)
        assert trickled.wait(40), "a connection trickling its headers was never closed"
    finally:
        for sock in (partial, idle, trickle):
            sock.close()
    assert httpx.get(ray_app + "/health", timeout=30).status_code == 200
