"""Win rate and its Wilson interval against the definition (score-test inversion) and enumeration."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from rlhfkit.eval.winrate import WinRate, wilson_interval, win_rate


def _score_test_bounds(p_hat: float, n: int, z: float) -> tuple[float, float]:
    """Wilson's interval from its definition: the p with |p̂ − p| ≤ z·sqrt(p(1 − p)/n), by bisection."""

    def inside(p: float) -> bool:
        return abs(p_hat - p) <= z * math.sqrt(p * (1 - p) / n)

    def edge(lo: float, hi: float) -> float:  # lo outside, hi inside (or reversed)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if inside(mid) == inside(hi):
                hi = mid
            else:
                lo = mid
        return 0.5 * (lo + hi)

    low = 0.0 if inside(0.0) else edge(0.0, p_hat)
    high = 1.0 if inside(1.0) else edge(1.0, p_hat)
    return low, high


@pytest.mark.parametrize("n", [1, 5, 20, 137])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_wilson_matches_score_test_inversion(n, level):
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    for k in range(n + 1):
        p_hat = k / n
        low, high = wilson_interval(p_hat, n, level)
        ref_low, ref_high = _score_test_bounds(p_hat, n, z)
        assert low == pytest.approx(ref_low, abs=1e-9)
        assert high == pytest.approx(ref_high, abs=1e-9)


def test_wilson_known_value():
    # Brown, Cai & DasGupta 2001 style example: 0 successes of 10 → upper bound z²/(n + z²).
    z = NormalDist().inv_cdf(0.975)
    low, high = wilson_interval(0.0, 10)
    assert low == pytest.approx(0.0, abs=1e-15)
    assert high == pytest.approx(z * z / (10 + z * z), abs=1e-12)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 0.85])
def test_wilson_coverage_by_exact_enumeration(p):
    """Exact coverage over Binomial(n, p): Wilson stays near its nominal 95 % (BCD 2001, Fig. 4)."""
    n = 60
    coverage = 0.0
    for k in range(n + 1):
        low, high = wilson_interval(k / n, n)
        if low <= p <= high:
            coverage += math.comb(n, k) * p**k * (1 - p) ** (n - k)
    assert 0.92 <= coverage <= 0.99


def test_win_rate_counts_ties_half():
    result = win_rate([1, 1, 1, 0.5, 0, 0.5, 1, 0])
    assert result.rate == pytest.approx((4 + 2 * 0.5) / 8)
    assert (result.wins, result.ties, result.losses, result.n) == (4, 2, 2, 8)
    assert (result.low, result.high) == pytest.approx(wilson_interval(5 / 8, 8))
    assert isinstance(result, WinRate)
    assert "62.5%" in str(result)


def test_win_rate_rejects_bad_outcomes():
    with pytest.raises(ValueError, match="outcome 1"):
        win_rate([1.0, 1.5])
    with pytest.raises(ValueError, match="outcome 0"):
        win_rate([float("nan")])


def test_wilson_argument_checks():
    with pytest.raises(ValueError):
        wilson_interval(1.1, 10)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 10, level=1.0)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)
