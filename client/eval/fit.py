"""A combination of same-pass signals fitted on labelled groups: within-group pairwise logistic
regression (numpy only; the client stays torch-free).

Every within-group pair with different labels gives one example: the feature difference
(better − worse), target 1. Features are standardized on the training groups, the fit is a few
Newton steps on an L2-penalized log-likelihood with no intercept (a shift common to a group
cannot change its ranking), and the weights are scaled back to raw features so the server computes
`sum(w * feature)` with nothing else to know.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# What a fitted combination weighs: the VIGOR score, the same pass's signals at temperature 1,
# and the length (so a combination can only beat the length baseline by more than length).
FEATURES = ("vigor", "entropy_mean", "self_certainty", "logprob_mean", "prob_mean", "num_tokens")
L2 = 1.0  # on standardized weights: with ~100s of pairs, it keeps six weights from chasing noise


class FitError(ValueError):
    pass


def pair_differences(
    rows: Sequence[tuple[Sequence[Sequence[float] | None], Sequence[float]]],
) -> np.ndarray:
    """Better-minus-worse feature differences over every usable within-group pair.

    `rows`: per group, per completion a feature vector (None: a value is missing) and labels.
    """
    diffs = []
    for features, labels in rows:
        n = len(labels)
        for i in range(n):
            for j in range(i + 1, n):
                fi, fj = features[i], features[j]
                if fi is None or fj is None or labels[i] == labels[j]:
                    continue
                better, worse = (fi, fj) if labels[i] > labels[j] else (fj, fi)
                diffs.append(np.subtract(better, worse, dtype=np.float64))
    return np.array(diffs, dtype=np.float64).reshape(-1, len(FEATURES))


def fit_pairwise_logistic(diffs: np.ndarray, scale: np.ndarray, l2: float = L2) -> np.ndarray:
    """Raw-feature weights w maximizing Σ log σ(w·d) − l2/2 ‖w·scale‖²; d: pair differences."""
    if diffs.shape[0] == 0:
        raise FitError("no within-group pair with different labels and every feature present")
    z = diffs / scale  # standardized differences
    w = np.zeros(z.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (1.0 - p) - l2 * w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + l2 * np.eye(z.shape[1])
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w / scale


def feature_scale(values: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-feature standard deviation over the training completions (1 where constant)."""
    arr = np.array(values, dtype=np.float64).reshape(-1, len(FEATURES))
    sd = arr.std(axis=0) if arr.shape[0] > 1 else np.ones(len(FEATURES))
    return np.where(sd > 0, sd, 1.0)
