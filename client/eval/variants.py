"""Reward variants on held-out folds: the reference trainer's focal weighting over a small grid
of λ (both metrics) and a fitted combination of the same pass's signals, beside each single
signal, with the one spec worth serving — or none.

Grouped cross-validation: each scored group sits in exactly one fold (groups never straddle
folds), and whatever is chosen or fitted (a focal λ and metric, a combination's weights) is
chosen on the other folds only; the held-out pair counts of every fold are pooled into one
AUROC, and its interval is a bootstrap over groups. The grid rows are shown too, computed on all
groups with nothing chosen; they are not candidates, since picking the best of them on the same
groups would flatter it.

A candidate is recommended only if the paired bootstrap interval of its held-out AUROC minus the
best single signal's AUROC lies above 0. The scores are those `vigor_client.variants` computes,
which is what the server computes for the same spec.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..schema import Focal, RewardSpec
from ..variants import variant_score
from .data import EvalGroup, EvalSet
from .fit import FEATURES, FitError, feature_scale, fit_pairwise_logistic, pair_differences
from .metrics import PairCount, bootstrap_interval, count_pairs, pooled_auroc
from .signals import SIGNALS, signal_values

DEFAULT_FOLDS = 5
LAMBDAS = (-1.0, -0.5, 0.5, 1.0)
# p_norm is weighted only above its target: the reference's 0.9.
FOCAL_GRID = tuple(
    Focal(metric=metric, lam=lam, target=0.9 if metric == "p_norm" else None)
    for metric in ("entropy", "p_norm")
    for lam in LAMBDAS
)
CANDIDATES = ("focal_tuned", "combination")

Scored = list[tuple[EvalGroup, dict[str, Any]]]


def focal_spec(focal: Focal) -> RewardSpec:
    return RewardSpec(name=f"focal-{focal.metric}{focal.lam:+g}", focal=focal)


def spec_values(spec: RewardSpec, record: Mapping[str, Any]) -> list[float | None]:
    """The spec's score per completion, from a scored group as recorded (what the server gives)."""
    signals = record["signals"]
    out = []
    for j, (raw, n) in enumerate(zip(record["scores"], record["num_tokens"], strict=True)):
        value, _ = variant_score(spec, raw, n, {name: v[j] for name, v in signals.items()})
        out.append(value)
    return out


def _features(record: Mapping[str, Any]) -> list[list[float] | None]:
    out = []
    signals = record["signals"]
    for j, (raw, n) in enumerate(zip(record["scores"], record["num_tokens"], strict=True)):
        row = [raw, *(signals[f][j] for f in FEATURES[1:-1]), float(n)]
        out.append(None if any(v is None for v in row) else [float(v) for v in row])
    return out


def fit_combination(scored: Scored, name: str) -> RewardSpec:
    rows = [(_features(rec), g.labels) for g, rec in scored]
    present = [f for feats, _ in rows for f in feats if f is not None]
    weights = fit_pairwise_logistic(pair_differences(rows), feature_scale(present))
    return RewardSpec(name=name, weights=dict(zip(FEATURES, map(float, weights), strict=True)))


def tune_focal(scored: Scored) -> RewardSpec:
    """The grid member with the highest pooled AUROC on `scored` (the first on a tie)."""
    best, best_auroc = None, -1.0
    for focal in FOCAL_GRID:
        spec = focal_spec(focal)
        auroc = pooled_auroc([count_pairs(spec_values(spec, r), g.labels) for g, r in scored])
        if auroc is not None and auroc > best_auroc:
            best, best_auroc = spec, auroc
    if best is None:
        raise FitError("no group has a usable pair for any focal variant")
    return best


def assign_folds(keys: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """Each group key to one fold, by a seeded shuffle: a rerun draws the same folds."""
    order = sorted(set(keys))
    random.Random(seed).shuffle(order)
    return {key: i % folds for i, key in enumerate(order)}


def choose(candidate: str, train: Scored, fold: int | None) -> RewardSpec:
    suffix = "" if fold is None else f"-fold{fold}"
    if candidate == "focal_tuned":
        spec = tune_focal(train)
        return spec.model_copy(update={"name": spec.name + suffix})
    return fit_combination(train, "fit-combination" + suffix)


def evaluate_variants(
    data: EvalSet,
    records: Mapping[str, dict[str, Any]],
    header: Mapping[str, Any] | None,
    single: Mapping[str, Mapping[str, Any]],
    *,
    folds: int = DEFAULT_FOLDS,
    bootstrap: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, Any]:
    """The report's `variants` section; `single` is the report's per-signal section."""
    scored: Scored = [(g, records[g.key]) for g in data.groups if g.key in records]
    temperature = (header or {}).get("temperature")
    if temperature != 1.0:
        return {
            "refused": f"the signals were scored at temperature {temperature}; variants "
            "read them at temperature 1, as the server does: rescore with --temperature 1"
        }
    seen: set[str] = set()
    scored = [(g, r) for g, r in scored if not (g.key in seen or seen.add(g.key))]
    if len(scored) < folds:
        return {"refused": f"{len(scored)} scored groups cannot fill {folds} folds"}
    fold_of = assign_folds([g.key for g, _ in scored], folds, seed)
    rated = [n for n, s in single.items() if s["auroc"] is not None]
    if not rated:
        return {"refused": "no single signal has a usable pair: nothing to compare against"}
    best_name = max(rated, key=lambda n: single[n]["auroc"])
    best_sig = next(s for s in SIGNALS if s.name == best_name)
    best_counts = [count_pairs(signal_values(r, best_sig), g.labels) for g, r in scored]

    def interval(units, stat):
        ci = bootstrap_interval(units, stat, samples=bootstrap, seed=seed, level=level)
        return list(ci) if ci is not None else None

    grid = {}
    for focal in FOCAL_GRID:
        spec = focal_spec(focal)
        counts = [count_pairs(spec_values(spec, r), g.labels) for g, r in scored]
        grid[spec.name] = {
            "label": spec.label,
            "auroc": pooled_auroc(counts),
            "ci": interval(counts, pooled_auroc),
            "pairs": sum(c.pairs for c in counts),
        }
    candidates: dict[str, Any] = {}
    for cand in CANDIDATES:
        try:
            fold_specs = {}
            held: list[PairCount] = [PairCount(0, 0, 0)] * len(scored)
            for f in range(folds):
                train = [(g, r) for g, r in scored if fold_of[g.key] != f]
                spec = choose(cand, train, f)
                fold_specs[f] = spec
                for k, (g, r) in enumerate(scored):
                    if fold_of[g.key] == f:
                        held[k] = count_pairs(spec_values(spec, r), g.labels)
            final = choose(cand, scored, None)
        except (FitError, np.linalg.LinAlgError) as exc:
            candidates[cand] = {"refused": str(exc)}
            continue
        paired = list(zip(held, best_counts, strict=True))
        diff = interval(paired, _difference)
        candidates[cand] = {
            "auroc": pooled_auroc(held),
            "ci": interval(held, pooled_auroc),
            "pairs": sum(c.pairs for c in held),
            "minus_best_single": _difference(paired),
            "minus_best_single_ci": diff,
            "clears_best_single": diff is not None and diff[0] > 0,
            "fold_specs": {
                str(f): s.model_dump(mode="json", by_alias=True, exclude_none=True)
                for f, s in fold_specs.items()
            },
            # per fold, its held-out groups' pairs: what serving that fold's spec must give
            "fold_pairs": {
                str(f): _sum(
                    [c for c, (g, _) in zip(held, scored, strict=True) if fold_of[g.key] == f]
                )
                for f in range(folds)
            },
            "spec": final.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
    cleared = [c for c in CANDIDATES if candidates[c].get("clears_best_single")]
    recommended = max(cleared, key=lambda c: candidates[c]["auroc"]) if cleared else None
    out: dict[str, Any] = {
        "folds": folds,
        "fold_of_line": {str(g.line): fold_of[g.key] for g, _ in scored},
        "best_single": {"name": best_name, "auroc": single[best_name]["auroc"]},
        "grid": grid,
        "candidates": candidates,
        "recommended": recommended,
    }
    if recommended is None:
        out["why_none"] = (
            "no candidate's held-out AUROC clears the best single signal "
            f"({best_name}): the lower end of each paired interval of the difference is not "
            "above 0"
        )
    else:
        spec = dict(candidates[recommended]["spec"])
        spec["about"] = {
            "heldout_auroc": candidates[recommended]["auroc"],
            "heldout_ci": candidates[recommended]["ci"],
            "minus_best_single_ci": candidates[recommended]["minus_best_single_ci"],
            "best_single": best_name,
            "folds": folds,
            "input": data.path,
            "model": (header or {}).get("model"),
            "weight_version": (header or {}).get("weight_version"),
        }
        out["recommended_spec"] = spec
    return out


def _sum(counts: Sequence[PairCount]) -> dict[str, int]:
    return {k: sum(getattr(c, k) for c in counts) for k in ("wins", "ties", "pairs")}


def _difference(units: Sequence[tuple[PairCount, PairCount]]) -> float | None:
    a = pooled_auroc([u[0] for u in units])
    b = pooled_auroc([u[1] for u in units])
    return None if a is None or b is None else a - b


def format_variants(section: Mapping[str, Any], level: float = 0.95) -> str:
    if "refused" in section:
        return f"variants: not evaluated: {section['refused']}"
    pct = round(100 * level)
    best = section["best_single"]
    out = [
        f"reward variants, {section['folds']}-fold grouped cross-validation "
        f"(best single signal: {best['name']}, AUROC {best['auroc']:.3f})",
        "",
        f"{'variant':<24} {'AUROC':>6}  {f'{pct}% CI':<16} {'pairs':>6}  "
        f"{'- best single':>13}  {f'{pct}% CI':<17}",
    ]
    out.append("-" * len(out[-1]))
    for name, c in section["candidates"].items():
        if "refused" in c:
            out.append(f"{name:<24} not fitted: {c['refused']}")
            continue
        out.append(
            f"{name + ' (held out)':<24} {c['auroc']:>6.3f}  {_ci(c['ci']):<16} {c['pairs']:>6}  "
            f"{c['minus_best_single']:>+13.3f}  {_ci(c['minus_best_single_ci'], True):<17}"
        )
    for name, row in section["grid"].items():
        auroc = "n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
        out.append(f"{name:<24} {auroc:>6}  {_ci(row['ci']):<16} {row['pairs']:>6}  (grid, no fit)")
    out.append("")
    if section["recommended"] is None:
        out.append(f"no recommendation: {section['why_none']}.")
    else:
        spec = section["recommended_spec"]
        out.append(f"recommended: {section['recommended']} -> spec {spec['name']!r}")
    for name, c in section["candidates"].items():
        if "spec" in c:
            out.append(
                f"  {name}, fitted on all groups: {RewardSpec.model_validate(c['spec']).label}"
            )
    return "\n".join(out)


def _ci(ci: Sequence[float] | None, signed: bool = False) -> str:
    if ci is None:
        return "n/a"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def check_served(
    client: Any, data: EvalSet, section: Mapping[str, Any], candidate: str, folds: Sequence[int]
) -> dict[str, Any]:
    """Serve each fold's spec of `candidate` back: score that fold's held-out groups on the
    server by the spec (as JSON, shaping "none") and count their pairs, beside the report's."""
    cand = section["candidates"][candidate]
    lines = {int(line): f for line, f in section["fold_of_line"].items()}
    out = {}
    for f in folds:
        groups = [g for g in data.groups if lines.get(g.line) == f]
        res = client.score(
            [g.request() for g in groups], reward_spec=cand["fold_specs"][str(f)], shaping="none"
        )
        served = _sum(
            [count_pairs(r.scores, g.labels) for g, r in zip(groups, res.groups, strict=True)]
        )
        out[str(f)] = {
            "served": served,
            "claimed": cand["fold_pairs"][str(f)],
            "served_spec": res.reward_spec.name if res.reward_spec else None,
        }
    served_all = [v["served"] for v in out.values()]
    pairs = sum(c["pairs"] for c in served_all)
    auroc = (sum(c["wins"] + 0.5 * c["ties"] for c in served_all) / pairs) if pairs else None
    return {
        "candidate": candidate,
        "folds": out,
        "served_auroc": auroc,
        "equal": all(v["served"] == v["claimed"] for v in out.values()),
    }


def format_served(check: Mapping[str, Any]) -> str:
    out = [f"served back ({check['candidate']}, each fold's spec on its held-out groups):"]
    for f, v in check["folds"].items():
        same = "equal" if v["served"] == v["claimed"] else "DIFFERENT"
        out.append(
            f"  fold {f}: served {v['served']}, report {v['claimed']}: {same} ({v['served_spec']})"
        )
    auroc = check["served_auroc"]
    out.append(f"  served AUROC over these folds: {'n/a' if auroc is None else f'{auroc:.3f}'}")
    return "\n".join(out)
