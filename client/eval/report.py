"""The report: per signal, pooled within-group AUROC with its bootstrap interval (and Spearman
for numeric labels), every group's own figures, and the groups that had nothing to compare.

`build_report` returns plain JSON-ready data (what `--json` writes); `format_table` renders it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .data import EvalSet
from .metrics import bootstrap_interval, count_pairs, mean, pooled_auroc, spearman
from .signals import SIGNALS, signal_values

DEFAULT_BOOTSTRAP = 2000


def build_report(
    data: EvalSet,
    records: Mapping[str, dict[str, Any]],
    header: Mapping[str, Any] | None,
    *,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    lines_by_status: dict[str, list[int]] = {"empty": [], "one_label": [], "not_scored": []}
    scored = []  # (group, record)
    for g in data.groups:
        if g.status != "scorable":
            lines_by_status[g.status].append(g.line)
        elif g.key in records:
            scored.append((g, records[g.key]))
        else:
            lines_by_status["not_scored"].append(g.line)
    numeric = data.label_kind == "score"
    per_group = [_group_row(g, rec, numeric) for g, rec in scored]
    signals = {}
    for sig in SIGNALS:
        counts = [row["_counts"][sig.name] for row in per_group]
        used = [c for c in counts if c.pairs]
        nulls = Counter(
            reason or "no value"
            for g, rec in scored
            for v, reason in zip(signal_values(rec, sig), rec["reasons"], strict=True)
            if v is None
        )
        entry: dict[str, Any] = {
            "label": sig.label,
            "auroc": pooled_auroc(used),
            "ci": _pair(
                bootstrap_interval(used, pooled_auroc, samples=bootstrap, seed=seed, level=level)
            ),
            "pairs": sum(c.pairs for c in used),
            "wins": sum(c.wins for c in used),
            "ties": sum(c.ties for c in used),
            "groups_with_pairs": len(used),
            # Scored, yet no pair left once completions without a value are set aside.
            "lines_without_pair": [
                row["line"] for row, c in zip(per_group, counts, strict=True) if not c.pairs
            ],
            "null_values": dict(nulls),
            "spearman": None,
        }
        if numeric:
            rhos = [
                row["spearman"][sig.name]
                for row in per_group
                if row["spearman"][sig.name] is not None
            ]
            ci = bootstrap_interval(rhos, mean, samples=bootstrap, seed=seed, level=level)
            entry["spearman"] = {"mean": mean(rhos), "ci": _pair(ci), "groups": len(rhos)}
        signals[sig.name] = entry
    for row in per_group:
        del row["_counts"]
    header = header or {}
    return {
        "input": data.path,
        "model": header.get("model"),
        "weight_version": header.get("weight_version"),
        "temperature": header.get("temperature"),
        "label_kind": data.label_kind,
        "groups": {
            "in_file": len(data.groups),
            "scored": len(scored),
            "empty": len(lines_by_status["empty"]),
            "one_label": len(lines_by_status["one_label"]),
            "not_scored": len(lines_by_status["not_scored"]),
            "lines_empty": lines_by_status["empty"],
            "lines_one_label": lines_by_status["one_label"],
            "lines_not_scored": lines_by_status["not_scored"],
        },
        "completions": sum(len(g.completions) for g in data.groups),
        "bootstrap": {"samples": bootstrap, "seed": seed, "level": level, "unit": "group"},
        "signals": signals,
        "per_group": per_group,
    }


def _group_row(g, rec: dict[str, Any], numeric: bool) -> dict[str, Any]:
    counts = {s.name: count_pairs(signal_values(rec, s), g.labels) for s in SIGNALS}
    row: dict[str, Any] = {
        "line": g.line,
        "id": g.id,
        "completions": len(g.completions),
        "positives": None if numeric else int(sum(g.labels)),
        "auroc": {name: c.auroc for name, c in counts.items()},
        "spearman": None,
        "_counts": counts,
    }
    if numeric:
        row["spearman"] = {s.name: spearman(signal_values(rec, s), g.labels) for s in SIGNALS}
    return row


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return list(ci) if ci is not None else None


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def format_table(report: Mapping[str, Any]) -> str:
    g = report["groups"]
    model = report["model"] or "(no server contacted)"
    out = [
        f"{report['input']}: {model}, weight version {report['weight_version']}",
        f"groups: {g['in_file']} in file, {g['scored']} scored; {g['empty']} empty, "
        f"{g['one_label']} with one label only (no pair to compare)"
        + (f", {g['not_scored']} not scored yet" if g["not_scored"] else ""),
    ]
    for key, what in (("lines_empty", "empty"), ("lines_one_label", "one label only")):
        if g[key]:
            out.append(f"  {what}: lines {_line_list(g[key])}")
    b = report["bootstrap"]
    level = round(100 * b["level"])
    numeric = report["label_kind"] == "score"
    head = (
        f"{'signal':<16} {'AUROC':>6}  {f'{level}% CI':<16} {'pairs':>6} {'ties':>5} {'groups':>6}"
    )
    if numeric:
        head += f"  {'Spearman':>8}  {f'{level}% CI':<16}"
    out += ["", head, "-" * len(head)]
    for name, s in report["signals"].items():
        row = (
            f"{name:<16} {_f(s['auroc']):>6}  {_ci(s['ci']):<16} {s['pairs']:>6} "
            f"{s['ties']:>5} {s['groups_with_pairs']:>6}"
        )
        if numeric:
            rho = s["spearman"]
            row += f"  {_f(rho['mean']):>8}  {_ci(rho['ci']):<16}"
        out.append(row)
    pair = "(better, worse)" if numeric else "(correct, incorrect)"
    one = "better-scored" if numeric else "correct"
    out += [
        "",
        f"AUROC: within each group, the share of {pair} pairs where the {one} completion",
        "scores higher, ties counted half, pooled over groups; 0.5 is chance. length: longer",
        f"preferred (1 - AUROC for shorter). CI: bootstrap over groups, {b['samples']} resamples, "
        f"seed {b['seed']}.",
    ]
    for name, s in report["signals"].items():
        if s["lines_without_pair"]:
            out.append(f"  {name}: no usable pair in lines {_line_list(s['lines_without_pair'])}")
        if s["null_values"]:
            why = ", ".join(f"{n} {reason}" for reason, n in s["null_values"].items())
            out.append(f"  {name}: completions without a value: {why}")
    return "\n".join(out)


def _line_list(lines: list[int], limit: int = 12) -> str:
    shown = ", ".join(map(str, lines[:limit]))
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")
