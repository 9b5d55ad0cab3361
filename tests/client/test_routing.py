"""Spreading groups over replicas (`vigor_client._routing`): pure, no server."""

from vigor_client import Group
from vigor_client._routing import group_cost, merge_results, plan_routes, plan_shards, rendezvous
from vigor_client.schema import GroupResult, RewardsResponse

from .id_groups import ids_group


def test_shards_never_split_a_group_and_balance_the_cost():
    groups = [ids_group(p, c, seed=i) for i, (p, c) in enumerate(
        [(10, [5, 5, 5, 5]), (2, [1]), (3, [2, 2]), (10, [5, 5, 5, 5]), (1, [1, 1]), (4, [9])]
    )]  # fmt: skip
    shards = plan_shards(groups, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(groups)))
    loads = [sum(group_cost(groups[i]) for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(group_cost(g) for g in groups)
    assert all(s == sorted(s) for s in shards)
    assert plan_shards(groups[:1], 3) in ([[0], [], []], [[], [0], []], [[], [], [0]])


def test_single_group_requests_rotate_over_replicas():
    g = [ids_group(3, [2, 2])]
    chosen = [next(k for k, s in enumerate(plan_shards(g, 3, offset=t)) if s) for t in range(6)]
    assert chosen == [0, 1, 2, 0, 1, 2]


def test_costs_weigh_text_and_ids_alike():
    text = Group(prompt="x" * 40, completions=["y" * 8, "z" * 8])
    ids = Group(prompt_ids=[1] * 10, completion_ids=[[1, 2], [3, 4]])
    assert group_cost(text) == group_cost(ids) == 24


def test_merge_restores_order_and_reports_the_oldest_version():
    def res(version, ids):
        groups = [
            GroupResult(id=i, rewards=[0.0], scores=[-1.0], grad_norms=[1.0], num_tokens=[1],
                        reasons=[None]) for i in ids
        ]  # fmt: skip
        return RewardsResponse(model="m", weight_version=version, groups=groups)

    merged, versions = merge_results(4, [([1, 3], res(5, [1, 3])), ([0, 2], res(4, [0, 2]))])
    assert [g.id for g in merged.groups] == [0, 1, 2, 3]
    assert merged.weight_version == 4 and versions == {4, 5}


def held(key: str, seed: int) -> Group:
    g = ids_group(3, [2], seed=seed)
    return Group(id=key, prompt_ids=g.prompt_ids, completion_ids=g.completion_ids, group_size=4)


def test_samples_of_a_held_group_always_go_to_its_replica():
    urls = [f"http://r{k}:8000" for k in range(4)]
    keys = [f"prompt-{k}" for k in range(40)]
    home = {key: rendezvous(key, urls)[0] for key in keys}
    assert len(set(home.values())) == 4  # keys spread over every replica
    for turn, key in enumerate(keys):
        others = [ids_group(2, [3], seed=turn), ids_group(4, [1, 1], seed=turn + 1)]
        routes = plan_routes([others[0], held(key, turn), others[1]], urls, offset=turn)
        mine = [r for r in routes if r.held_key == key]
        assert len(mine) == 1 and mine[0].groups == [1] and mine[0].replica == home[key]
        assert sorted(i for r in routes if r.held_key is None for i in r.groups) == [0, 2]
    # Two samples of one group in one request travel together; two groups, one route each.
    routes = plan_routes([held("a", 1), held("b", 2), held("a", 3)], urls)
    assert {r.held_key: r.groups for r in routes} == {"a": [0, 2], "b": [1]}


def test_a_replica_leaving_moves_only_the_groups_it_held():
    urls = [f"http://r{k}:8000" for k in range(4)]
    keys = [f"prompt-{k}" for k in range(200)]
    before = {key: urls[rendezvous(key, urls)[0]] for key in keys}
    left = urls[:2] + urls[3:]
    after = {key: left[rendezvous(key, left)[0]] for key in keys}
    moved = {key for key in keys if before[key] != after[key]}
    assert moved == {key for key in keys if before[key] == urls[2]}
    # ... to where the full ranking said next, which is what a client resting r2 falls back to.
    assert all(after[k] == urls[rendezvous(k, urls)[1]] for k in moved)
