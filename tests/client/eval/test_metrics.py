"""The pure-Python statistics on values worked out by hand."""

import math

import pytest

from vigor_client.eval import PairCount, bootstrap_interval, count_pairs, pooled_auroc, spearman
from vigor_client.eval.metrics import mean, quantile, ranks


def test_pairs_count_wins_ties_and_skip_equal_labels_and_missing_values():
    # labels 1,1,0: pairs (0,2) and (1,2); 3 > 2 wins, 2 == 2 ties.
    assert count_pairs([3.0, 2.0, 2.0], [1, 1, 0]) == PairCount(wins=1, ties=1, pairs=2)
    assert count_pairs([3.0, 2.0, 2.0], [1, 1, 0]).auroc == 0.75
    # order within a pair does not matter: the better label is found either way
    assert count_pairs([1.0, 5.0], [0, 1]) == PairCount(1, 0, 1)
    assert count_pairs([None, 5.0, 1.0], [0, 1, 0]) == PairCount(1, 0, 1)
    assert count_pairs([None, 5.0, 1.0], [1, 0, 0]).pairs == 0
    assert count_pairs([1.0, 1.0], [1, 1]).auroc is None
    # numeric labels: every pair with different labels counts
    assert count_pairs([30.0, 20.0, 10.0], [3, 2, 1]) == PairCount(3, 0, 3)
    with pytest.raises(ValueError, match="3 values but 2 labels"):
        count_pairs([1.0, 2.0, 3.0], [1, 0])


def test_pooling_weighs_groups_by_pairs():
    a, b = PairCount(1, 0, 2), PairCount(4, 0, 4)  # 0.5 and 1.0
    assert pooled_auroc([a, b]) == 5 / 6
    assert pooled_auroc([]) is None and pooled_auroc([PairCount(0, 0, 0)]) is None


def test_ranks_and_spearman():
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([30, 20, 10], [3, 2, 1]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # signal ranks 1.5, 1.5, 3 against 1, 2, 3: cov 1.5 / sqrt(1.5 * 2)
    assert spearman([5, 5, 6], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert spearman([5, 5, 5], [1, 2, 3]) is None  # constant signal
    assert spearman([1, 2, None], [1, 1, 2]) is None  # constant labels once None is set aside
    assert spearman([None, 2], [1, 2]) is None


def test_quantile_interpolates_like_numpy():
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert quantile(xs, 0.0) == 0.0 and quantile(xs, 1.0) == 4.0
    assert quantile(xs, 0.5) == 2.0 and quantile(xs, 0.1) == pytest.approx(0.4)
    assert quantile([7.0], 0.3) == 7.0


def test_bootstrap_of_two_groups_is_known_by_hand():
    # Resampling two equal-sized groups gives AA (0.5), AB (0.75) or BB (1.0) with probability
    # 1/4, 1/2, 1/4: each end holds about 25% of the resamples, far above 2.5%, so the 95%
    # percentile interval is exactly [AUROC of A, AUROC of B].
    units = [PairCount(1, 0, 2), PairCount(2, 0, 2)]
    assert bootstrap_interval(units, pooled_auroc, samples=2000, seed=0) == (0.5, 1.0)
    assert bootstrap_interval(units, pooled_auroc, samples=2000, seed=7) == (0.5, 1.0)


def test_bootstrap_is_seeded_and_degenerate_for_identical_groups():
    units = [1.0, 0.2, 0.6, 0.9, 0.4, 0.3]
    first = bootstrap_interval(units, mean, samples=500, seed=3)
    assert bootstrap_interval(units, mean, samples=500, seed=3) == first
    assert bootstrap_interval(units, mean, samples=500, seed=4) != first
    lo, hi = first
    assert 0.2 < lo < mean(units) < hi < 1.0
    assert bootstrap_interval([0.7] * 5, mean, samples=100, seed=0) == (0.7, 0.7)
    assert bootstrap_interval([], mean, samples=100, seed=0) is None
