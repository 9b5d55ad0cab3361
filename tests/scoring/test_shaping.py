import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigor_service.scoring.shaping import rank_rewards, shape

from ..naive import naive_rank_rewards

scores = st.lists(
    st.one_of(st.none(), st.sampled_from([-3.0, -1.0, -1.0, 0.0]), st.floats(-1e6, 0)),
    min_size=1,
    max_size=12,
)


@given(scores)
def test_rank_rewards_match_naive_count(s):
    assert rank_rewards(s) == pytest.approx(naive_rank_rewards(s), abs=1e-15)


def test_evenly_spaced_and_bounded():
    assert rank_rewards([-5.0, -1.0, -3.0]) == [-1.0, 1.0, 0.0]


def test_single_member_gets_zero():
    assert rank_rewards([-2.0]) == [0.0]
    assert rank_rewards([None]) == [0.0]


def test_ties_break_by_position_earlier_lower():
    assert rank_rewards([-1.0, -1.0]) == [-1.0, 1.0]


def test_missing_scores_rank_below_every_valid_one():
    assert rank_rewards([None, -1e9, None, -1.0]) == pytest.approx([-1.0, 1 / 3, -1 / 3, 1.0])


def test_shape_none_passes_scores_through():
    assert shape([-1.0, None], "none") == [-1.0, None]
    with pytest.raises(ValueError, match="unknown shaping"):
        shape([-1.0], "softmax")
