"""Wilson bounds and the small order statistics used by the validate stage."""

from __future__ import annotations

import pytest

from build_tools.validate.stats import median, quantile, wilson


def test_wilson_zero_of_two_hundred_bounds_the_rate_near_two_percent():
    lo, hi = wilson(0, 200)
    assert lo == 0.0
    assert hi == pytest.approx(0.018845, abs=1e-5)


def test_wilson_all_successes_mirror_zero_successes():
    lo, hi = wilson(200, 200)
    assert hi == 1.0
    assert lo == pytest.approx(1 - wilson(0, 200)[1], abs=1e-12)


def test_wilson_half_is_symmetric_and_matches_reference_values():
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.29930, abs=1e-4)
    assert hi == pytest.approx(0.70070, abs=1e-4)
    assert lo + hi == pytest.approx(1.0)


@pytest.mark.parametrize("k,n", [(1, 5), (3, 7), (19, 20), (57, 200)])
def test_wilson_contains_the_point_estimate_and_narrows_with_more_runs(k, n):
    lo, hi = wilson(k, n)
    assert 0.0 <= lo < k / n < hi <= 1.0
    lo4, hi4 = wilson(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_wilson_rejects_impossible_counts_and_is_uninformative_without_runs():
    with pytest.raises(ValueError):
        wilson(6, 5)
    assert wilson(0, 0) == (0.0, 1.0)


def test_median_and_quantile():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert quantile([1.0, 2.0], 0.5) == 1.5
    with pytest.raises(ValueError):
        median([])
