"""The picture: pooled AUROC per signal with its interval, and every group's own AUROC beside it.

matplotlib is imported here only (`pip install 'vigor-reward[eval]'`), so the command and the
client work without it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#7f7f7f"]


def plot_report(report: Mapping[str, Any], path: str | Path) -> Path:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'vigor-reward[eval]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["signals"])
    labels = [report["signals"][n]["label"] for n in names]
    ys = list(range(len(names)))[::-1]  # first signal on top
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(12, 0.55 * len(names) + 2.4),
        sharey=True,
        gridspec_kw={"width_ratios": [1, 1.25]},
    )
    for y, name, colour in zip(ys, names, COLOURS, strict=False):
        s = report["signals"][name]
        if s["auroc"] is None:
            left.text(0.5, y, "no pairs", ha="center", va="center", color="grey")
            continue
        lo, hi = s["ci"] or (s["auroc"], s["auroc"])
        left.errorbar(
            s["auroc"],
            y,
            xerr=[[s["auroc"] - lo], [hi - s["auroc"]]],
            fmt="o",
            color=colour,
            capsize=5,
            markersize=7,
            linewidth=2,
        )
        left.annotate(
            f"{s['auroc']:.3f}  [{lo:.2f}, {hi:.2f}]",
            (hi, y),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    level = round(100 * report["bootstrap"]["level"])
    left.axvline(0.5, color="black", linestyle="--", linewidth=1)
    left.set_xlim(0.2, 0.9)
    left.set_yticks(ys, labels)
    left.set_xlabel(f"pooled within-group AUROC, {level}% bootstrap interval over groups")
    left.set_title("AUROC per signal (0.5 = chance)")

    rng = random.Random(0)  # fixed jitter: the same report draws the same picture
    groups = report["per_group"]
    for y, name, colour in zip(ys, names, COLOURS, strict=False):
        values = [row["auroc"][name] for row in groups if row["auroc"][name] is not None]
        jitter = [y + rng.uniform(-0.28, 0.28) for _ in values]
        right.scatter(values, jitter, s=14, alpha=0.45, color=colour, edgecolors="none")
        share = [v > 0.5 for v in values]
        if values:
            right.annotate(
                f"{sum(share)}/{len(values)} > 0.5",
                (1.04, y),
                va="center",
                fontsize=9,
                annotation_clip=False,
            )
    right.axvline(0.5, color="black", linestyle="--", linewidth=1)
    right.set_xlim(-0.04, 1.04)
    right.set_xlabel("AUROC within each group (one dot per group)")
    right.set_title("per group")

    g = report["groups"]
    model = report["model"] or "?"
    fig.suptitle(
        f"{Path(report['input']).name}: {model} (weight version {report['weight_version']}), "
        f"{g['scored']} groups scored, {g['empty'] + g['one_label']} without a pair",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
