"""The reference trainer's focal variants over real HTTP, against the naive float64 oracle.

Targets are chosen from the data (the median of the group's values) so that every mask weights
some completions and leaves others; the groups hold an empty completion and a group of one.
"""

import statistics

import httpx
import pytest
import torch

from vigor_service.app import create_app
from vigor_service.models.loader import LoadedModel
from vigor_service.settings import Settings

from ..naive import (
    naive_entropy_and_p_norm,
    naive_focal,
    naive_grad_norm,
    naive_rank_rewards,
    naive_score,
)
from ..servers import ThreadServer
from ..tiny_models import TINY_MODELS, random_groups

GROUPS = random_groups(
    seed=11, prompt_lens=(5, 3, 4), completion_lens=((4, 9, 0, 1, 6), (6,), (3, 5, 2))
)
BODY = {
    "groups": [
        {"id": f"g{i}", "prompt_ids": p, "completion_ids": cs} for i, (p, cs) in enumerate(GROUPS)
    ]
}


def serve(model, **settings) -> ThreadServer:
    loaded = LoadedModel(name="tiny", path=None, model=model, tokenizer=None)
    return ThreadServer(create_app(Settings(max_batch_tokens=64, **settings), loaded=loaded))


def oracle(model):
    """Per group: raw scores, entropies, p_norms, all naive float64."""
    out = []
    for prompt, comps in GROUPS:
        scores = [
            naive_score(naive_grad_norm(model, prompt, c), len(c)) for c in comps
        ]  # fmt: skip
        ep = [naive_entropy_and_p_norm(model, prompt, c) for c in comps]
        out.append((scores, [e for e, _ in ep], [p for _, p in ep]))
    return out


def median_of(values):
    return statistics.median(v for v in values if v is not None)


@pytest.mark.parametrize("name", ["llama-untied", "qwen2-tied"])
@pytest.mark.parametrize("engine", ["batched", "loop"])
def test_every_focal_variant_equals_the_reference_formula(name, engine):
    model = TINY_MODELS[name](dtype=torch.float64)
    want = oracle(model)
    all_h = [h for _, hs, _ in want for h in hs]
    all_p = [p for _, _, ps in want for p in ps]
    # the median splits each mask: some completions weighted, some left at weight 1
    h_target = median_of([h + 1e-6 for h in all_h if h is not None])
    p_target = median_of(all_p)
    variants = [
        ("entropy", -0.5, None),
        ("entropy", -1.0, h_target),
        ("entropy", 0.7, h_target),
        ("p_norm", -1.0, p_target),
        ("p_norm", -0.5, None),  # omitted: the reference's 0.9, above every tiny-model p_norm
    ]
    with serve(model, engine=engine) as server:
        for metric, lam, target in variants:
            focal = {"metric": metric, "lambda": lam} | (
                {} if target is None else {"target": target}
            )
            answers = {
                shaping: httpx.post(
                    server.url + "/v1/rewards",
                    json={**BODY, "focal": focal, "shaping": shaping},
                    timeout=120,
                ).json()
                for shaping in ("rank", "none")
            }
            want_target = 0.9 if metric == "p_norm" and target is None else target
            masked = 0
            for (scores, hs, ps), ranked, raw in zip(
                want, answers["rank"]["groups"], answers["none"]["groups"], strict=True
            ):
                weighted = naive_focal(scores, hs, ps, metric, lam, want_target)
                masked += sum(
                    1 for s, w in zip(scores, weighted, strict=True) if s is not None and s != w
                )
                for got, w in zip(raw["scores"], weighted, strict=True):
                    assert (got is None and w is None) or got == pytest.approx(w, rel=1e-6)
                # shaping "none" is the reference's rank normalization off: the weighted score
                assert raw["rewards"] == raw["scores"]
                assert ranked["scores"] == raw["scores"]
                assert ranked["rewards"] == pytest.approx(naive_rank_rewards(weighted))
                if len(scores) == 1:
                    assert ranked["rewards"] == [0.0]  # G = 1, as the reference
            spec = answers["rank"]["reward_spec"]
            assert spec["focal"] == {
                "enabled": True, "metric": metric, "lambda": lam, "target": want_target
            }  # fmt: skip
            if want_target is None or want_target < 0.9:
                assert masked > 0  # the variant changed something, so the check has teeth


def test_server_default_and_named_spec_give_the_request_field_s_scores(tmp_path):
    model = TINY_MODELS["llama-untied"](dtype=torch.float64)
    focal = {"metric": "entropy", "lambda": -1.0}
    spec = {"name": "my-focal", "focal": focal}
    path = tmp_path / "spec.json"
    path.write_text(__import__("json").dumps(spec))
    with serve(model) as plain:
        by_field = httpx.post(plain.url + "/v1/rewards", json={**BODY, "focal": focal}).json()
        inline = httpx.post(plain.url + "/v1/rewards", json={**BODY, "reward_spec": spec}).json()
        unweighted = httpx.post(plain.url + "/v1/rewards", json=BODY).json()
    with serve(model, focal=True, focal_lambda=-1.0) as focal_default:
        by_default = httpx.post(focal_default.url + "/v1/rewards", json=BODY).json()
        off = httpx.post(
            focal_default.url + "/v1/rewards", json={**BODY, "focal": {"enabled": False}}
        ).json()
        info = httpx.get(focal_default.url + "/v1/model").json()
    with serve(model, reward_spec=str(path)) as spec_default:
        by_name = httpx.post(
            spec_default.url + "/v1/rewards", json={**BODY, "reward_spec": "my-focal"}
        ).json()
        plain_by_name = httpx.post(
            spec_default.url + "/v1/rewards", json={**BODY, "reward_spec": "vigor"}
        ).json()
        unknown = httpx.post(spec_default.url + "/v1/rewards", json={**BODY, "reward_spec": "nope"})
    scores = lambda r: [g["scores"] for g in r["groups"]]  # noqa: E731
    assert scores(by_field) == scores(inline) == scores(by_default) == scores(by_name)
    assert scores(by_field) != scores(unweighted)
    assert scores(off) == scores(unweighted) == scores(plain_by_name)
    assert inline["reward_spec"]["name"] == by_name["reward_spec"]["name"] == "my-focal"
    assert (
        unweighted["reward_spec"]["name"] == "vigor" and unweighted["reward_spec"]["focal"] is None
    )
    assert info["reward_spec"]["focal"]["lambda"] == -1.0
    assert info["reward_specs"] == ["focal", "vigor"]
    assert unknown.status_code == 422 and "'nope'" in unknown.text and "my-focal" in unknown.text
