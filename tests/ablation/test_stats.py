"""Statistics over seeds (magvit.ablation.stats): the paired Student-t interval and an arm's mean and spread."""

from __future__ import annotations

import math

import pytest

from magvit.ablation.stats import PairedDifference, mean_std, paired_difference
from magvit.errors import InputError


def _fields(d: PairedDifference) -> tuple[float | int | None, ...]:
    return (d.mean, d.std, d.n, d.low, d.high)


def t_quantile_2df(p: float) -> float:
    """Student's t quantile for 2 degrees of freedom in closed form: (2p - 1) / sqrt(2 p (1 - p))."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def t_quantile_1df(p: float) -> float:
    """Student's t quantile for 1 degree of freedom (the Cauchy distribution): tan(pi (p - 1/2))."""
    return math.tan(math.pi * (p - 0.5))


def test_paired_difference_is_the_student_t_interval():
    d = paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])  # differences 2, 3, 4: mean 3, s 1
    half = t_quantile_2df(0.975) * 1.0 / math.sqrt(3)
    assert (d.mean, d.std, d.n) == (3.0, 1.0, 3)
    assert d.low == pytest.approx(3 - half, abs=1e-12) and d.high == pytest.approx(3 + half, abs=1e-12)
    assert d.verdict == "reproduced"


def test_the_confidence_sets_the_quantile():
    d = paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 1.0], confidence=0.9)
    half = t_quantile_2df(0.95) / math.sqrt(3)
    assert d.low == pytest.approx(3 - half, abs=1e-12) and d.high == pytest.approx(3 + half, abs=1e-12)


def test_two_pairs_use_one_degree_of_freedom():
    d = paired_difference([1.0, 2.0], [1.5, 1.5])  # differences -0.5, 0.5: mean 0, s sqrt(0.5)
    half = t_quantile_1df(0.975) * math.sqrt(0.5) / math.sqrt(2)
    assert (d.mean, d.n) == (0.0, 2) and d.std == pytest.approx(math.sqrt(0.5), abs=1e-15)
    assert d.low == pytest.approx(-half, abs=1e-9) and d.high == pytest.approx(half, abs=1e-9)
    assert d.verdict == "inconclusive"


def test_lower_is_better_flips_the_sign():
    # e.g. FVD: the better arm's values are lower, and a positive difference still favours it
    lower = paired_difference([1.0, 1.0, 1.0], [3.0, 4.0, 5.0], higher_is_better=False)
    higher = paired_difference([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    assert _fields(lower) == _fields(higher)
    assert lower.verdict == "reproduced"


def test_the_opposite_ordering_is_not_reproduced():
    d = paired_difference([1.0, 1.0, 1.0], [3.0, 4.0, 5.0])
    half = t_quantile_2df(0.975) / math.sqrt(3)
    assert (d.mean, d.std) == (-3.0, 1.0)
    assert d.low == pytest.approx(-3 - half, abs=1e-12) and d.high == pytest.approx(-3 + half, abs=1e-12)
    assert d.verdict == "not reproduced"


def test_equal_differences_give_a_zero_width_interval():
    d = paired_difference([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert _fields(d) == (1.0, 0.0, 3, 1.0, 1.0)
    assert d.verdict == "reproduced"


def test_a_single_pair_has_no_interval():
    d = paired_difference([2.0], [1.0])
    assert _fields(d) == (1.0, None, 1, None, None)
    assert d.verdict == "inconclusive"


@pytest.mark.parametrize(("low", "high", "verdict"), [
    (0.5, 2.0, "reproduced"),
    (-2.0, -0.5, "not reproduced"),
    (-1.0, 1.0, "inconclusive"),
    (0.0, 2.0, "inconclusive"),  # an interval that touches 0 does not exclude it
    (-2.0, 0.0, "inconclusive"),
    (None, None, "inconclusive"),
])
def test_the_verdict_is_where_the_interval_lies(low, high, verdict):
    assert PairedDifference(1.0, 1.0, 3, low, high).verdict == verdict


@pytest.mark.parametrize(("better", "worse"), [([1.0, 2.0], [1.0]), ([1.0], [1.0, 2.0]), ([], [])])
def test_unpaired_values_are_an_input_error(better, worse):
    with pytest.raises(InputError, match=f"same non-zero count, got {len(better)} and {len(worse)}"):
        paired_difference(better, worse)


def test_mean_std_is_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, math.sqrt(5.0 / 3.0))  # squared deviations sum to 5, n - 1 = 3
    assert mean_std([20.0, 22.0]) == (21.0, math.sqrt(2.0))


def test_mean_std_of_one_value_has_no_spread():
    assert mean_std([7.5]) == (7.5, 0.0)


def test_mean_std_of_nothing_is_none():
    assert mean_std([]) == (None, None)
