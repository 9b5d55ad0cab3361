"""The weight plane end to end: `vigor-serve` processes on the default model, over loopback.

One server is mutated by these tests (`weights_server`); a second one, started fresh on the
perturbed checkpoint, gives the scores a reload or push must reproduce exactly; the shared
`served_default` gives those of the original weights.
"""

from __future__ import annotations

import shutil
import threading

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from vigor_client import InvalidRequestError, PermissionDeniedError, VigorClient

from ..servers import ProcessServer, until

pytestmark = pytest.mark.slow

TOKEN = "weights-admin-token"
GROUPS = [{"prompt": "Q: 2 + 3 = ?\nA:", "completions": [" 5", " six"]}]
SWAPPED = [  # the tensors the concurrency test flips between two values
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.15.mlp.down_proj.weight",
    "model.norm.weight",
]


def perturb(tensors: dict[str, torch.Tensor], names, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for name in names:
        t = tensors[name]
        out[name] = t + 0.05 * t.std() * torch.randn(t.shape, generator=gen, dtype=t.dtype)
    return out


@pytest.fixture(scope="module")
def original(default_model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(default_model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    """The server's --allowed-weights-dir."""
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def perturbed_dir(default_model_dir, original, ckpt_root):
    """A full copy of the default checkpoint with every layer-2 tensor and the embedding moved."""
    target = ckpt_root / "perturbed"
    shutil.copytree(default_model_dir, target, ignore=shutil.ignore_patterns("model.safetensors"))
    names = [n for n in original if ".layers.2." in n] + ["model.embed_tokens.weight"]
    save_file(perturb(original, names), str(target / "model.safetensors"), {"format": "pt"})
    return target


def score(url: str, token: str | None = None) -> tuple[int, list[float]]:
    with VigorClient(url, api_token=token, timeout=300) as client:
        res = client.score(GROUPS, shaping="none")
    return res.weight_version, res.groups[0].scores


@pytest.fixture(scope="module")
def perturbed_scores(perturbed_dir, tmp_path_factory):
    """What a server started fresh on the perturbed checkpoint answers."""
    # Same engine as served_default (the default), so equal weights give bit-equal scores.
    server = ProcessServer("--model", str(perturbed_dir))
    server.start(tmp_path_factory.mktemp("fresh") / "server.log")
    try:
        return score(server.url)[1]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def original_scores(served_default):
    return score(served_default.url)[1]


@pytest.fixture(scope="module")
def weights_server(default_model_dir, ckpt_root, tmp_path_factory):
    server = ProcessServer("--admin-token", TOKEN, "--allowed-weights-dir", str(ckpt_root))
    server.start(tmp_path_factory.mktemp("weights") / "server.log")
    yield server
    server.stop()


@pytest.fixture
def admin(weights_server):
    with VigorClient(weights_server.url, admin_token=TOKEN, timeout=300) as client:
        yield client


def test_reload_gives_exactly_what_a_fresh_server_on_the_checkpoint_gives(
    admin, weights_server, perturbed_dir, perturbed_scores, original_scores
):
    version, before = score(weights_server.url)
    assert before == original_scores
    res = admin.reload_weights(perturbed_dir)
    assert res.weight_version == version + 1 and res.tensors == 272  # lm_head tied: counted once
    assert score(weights_server.url) == (version + 1, perturbed_scores)
    assert perturbed_scores != original_scores


def test_push_gives_exactly_what_a_fresh_server_gives(
    admin, weights_server, original, perturbed_dir, perturbed_scores, original_scores
):
    res = admin.push_weights(original, full=True, bucket_bytes=64 << 20, progress=False)
    assert res.operation == "commit" and res.bytes == sum(t.nbytes for t in original.values())
    assert score(weights_server.url) == (res.weight_version, original_scores)
    pert = load_file(str(perturbed_dir / "model.safetensors"))
    res = admin.push_weights(pert, full=True, progress=False)
    assert score(weights_server.url) == (res.weight_version, perturbed_scores)
    admin.push_weights(original, progress=False)  # back to the original for the next tests


def test_bad_checkpoints_are_refused_and_scores_stay_identical(
    admin, weights_server, original, perturbed_dir, ckpt_root, default_model_dir
):
    version, before = score(weights_server.url)
    bad = ckpt_root / "bad"
    bad.mkdir()
    cut = bad / "truncated.safetensors"
    cut.write_bytes((perturbed_dir / "model.safetensors").read_bytes()[: 100 << 20])
    junk = bad / "corrupt.safetensors"
    junk.write_bytes(b"\xff" * 4096)
    q = "model.layers.3.self_attn.q_proj.weight"
    save_file({q: original[q][:, :100].contiguous()}, str(bad / "shape.safetensors"))
    save_file({q: original[q].half()}, str(bad / "dtype.safetensors"))
    nan = original[q].clone()
    nan[7, 7] = float("nan")
    save_file({q: nan}, str(bad / "nan.safetensors"))
    save_file({"model.layers.99.mlp.up_proj.weight": original[q]}, str(bad / "unknown.safetensors"))
    cases = [
        (cut, True, "truncated"),
        (junk, True, "corrupt.safetensors"),
        (bad / "shape.safetensors", False, f"tensor '{q}' has shape [576, 100]"),
        (bad / "dtype.safetensors", False, f"tensor '{q}': dtype float16"),
        (bad / "nan.safetensors", False, f"tensor '{q}': holds 1 NaN"),
        (bad / "unknown.safetensors", False, "'model.layers.99.mlp.up_proj.weight' is not a"),
        (bad / "nan.safetensors", True, "NaN"),
        (bad / "shape.safetensors", True, "has shape"),
    ]
    for path, full, phrase in cases:
        with pytest.raises(InvalidRequestError) as info:
            admin.reload_weights(path, full=full)
        assert phrase in info.value.message, (path, info.value.message)
        assert score(weights_server.url) == (version, before)
    save_file({q: original[q]}, str(bad / "one.safetensors"))
    with pytest.raises(InvalidRequestError, match="missing 271"):
        admin.reload_weights(bad / "one.safetensors")  # a full reload needs every tensor
    (ckpt_root / "escape").symlink_to(default_model_dir)
    for outside in (default_model_dir, ckpt_root / "escape", ckpt_root / ".." / "x"):
        with pytest.raises(PermissionDeniedError, match="outside the allowed"):
            admin.reload_weights(outside)
    with pytest.raises(InvalidRequestError, match="NaN"):
        admin.push_weights({q: nan}, progress=False)
    assert score(weights_server.url) == (version, before)


def test_concurrent_scoring_during_swaps_never_errors_or_mixes_versions(
    admin, weights_server, original
):
    sets = {"a": {n: original[n] for n in SWAPPED}, "b": perturb(original, SWAPPED, seed=5)}
    expected, which = {}, {}
    for key in ("b", "a"):
        version = admin.push_weights(sets[key], progress=False).weight_version
        which[version] = key
        expected[key] = score(weights_server.url)[1]
    assert expected["a"] != expected["b"]

    results, errors, done = [], [], threading.Event()

    def scorer() -> None:
        with VigorClient(weights_server.url, timeout=300) as client:
            while not done.is_set():
                try:
                    res = client.score(GROUPS, shaping="none")
                    results.append((res.weight_version, res.groups[0].scores))
                except Exception as exc:  # any error fails the test
                    errors.append(exc)

    threads = [threading.Thread(target=scorer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(4):
            key = "b" if i % 2 == 0 else "a"
            version = admin.push_weights(sets[key], progress=False).weight_version
            which[version] = key
            # A score on these weights before the next swap: swaps interleave with scoring
            # however slow the machine (an error ends the wait; it fails the test below).
            until(
                lambda v=version: errors or any(w == v for w, _ in results),
                f"a score at version {version}",
                within_s=120,
            )
    finally:
        done.set()
        for t in threads:
            t.join(300)
    assert not errors, errors
    assert len({v for v, _ in results}) >= 3, "the swaps did not interleave with scoring"
    for version, got in results:
        assert got == expected[which[version]], version  # exactly one version's scores


def test_auth_and_metrics_on_the_real_server(admin, weights_server, original, ckpt_root):
    url = weights_server.url
    with pytest.raises(InvalidRequestError):
        admin.reload_weights(ckpt_root / "does-not-exist")
    q = "model.norm.weight"
    admin.push_weights({q: original[q]}, progress=False)
    r = httpx.post(url + "/admin/weights/reload", json={"path": "/x"}, timeout=30)
    assert r.status_code == 401
    r = httpx.post(
        url + "/admin/weights/reload",
        json={"path": "/x"},
        headers={"Authorization": "Bearer nope"},
        timeout=30,
    )
    assert r.status_code == 403
    version = score(url)[0]
    text = httpx.get(url + "/metrics", timeout=30).text
    assert f"vigor_weight_version {float(version)}" in text
    assert 'vigor_weight_update_duration_seconds_count{operation="push"}' in text
    assert 'vigor_weight_update_failures_total{code="weights_rejected",operation="reload"}' in text
    assert 'method="POST",route="/admin/weights/reload",status="401"' in text
    tokens = [line for line in text.splitlines() if line.startswith("vigor_tokens_scored_total")]
    assert float(tokens[0].split()[-1]) > 0


def test_lora_adapter_pushed_then_unloaded(
    admin, weights_server, original, original_scores, default_model_dir
):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM

    admin.push_weights(original, progress=False)  # the original base, whatever ran before
    config = AutoConfig.from_pretrained(default_model_dir)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    peft = get_peft_model(skeleton, lora)
    state = {
        k: 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
        for i, (k, v) in enumerate(get_peft_model_state_dict(peft).items())
    }
    res = admin.load_adapter(state, config=lora, name="step-1")
    assert res.adapter == "step-1" and res.tensors == 4 * 30
    info = admin.model_info()
    assert info.adapter == "step-1" and info.num_scored_parameters == sum(
        t.numel() for t in state.values()
    )
    version, with_adapter = score(weights_server.url)
    assert version == res.weight_version and with_adapter != original_scores
    res = admin.unload_adapter()
    assert res.adapter is None
    assert score(weights_server.url) == (res.weight_version, original_scores)
