"""Win rate of one policy against another, with a confidence interval.

Implementation details and their sources:

1. An outcome per prompt in [0, 1]: 1 a win, 0 a loss, ½ a tie (ties count half, as AlpacaEval
   and Chatbot Arena count them), or a pairwise judge's probability. The win rate is their mean,
   p̂ = (W + T/2) / n for hard verdicts.
2. The interval is Wilson's score interval (Wilson 1927; Brown, Cai & DasGupta 2001,
   "Interval Estimation for a Binomial Proportion", eq. 4 — recommended there over the Wald
   interval, which undercovers badly near 0 and 1 and at small n):
       centre = (p̂ + z²/2n) / (1 + z²/n)
       half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²)
   i.e. the set of p with |p̂ − p| ≤ z·sqrt(p(1 − p)/n). With ties or fractional outcomes the
   variance of an outcome with mean p is at most p(1 − p) (the Bernoulli case is the maximum for a
   variable in [0, 1]), so the interval is conservative there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

__all__ = ["WinRate", "win_rate", "wilson_interval"]


def wilson_interval(p_hat: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) for a proportion p̂ observed on n trials.

    z = Φ⁻¹(1 − (1 − level)/2); see the module docstring for the formula. n = 0 gives (0, 1).
    Reference: Brown, Cai & DasGupta 2001, eq. 4.
    """
    if not 0.0 <= p_hat <= 1.0:
        raise ValueError(f"wilson_interval: p_hat must be in [0, 1], got {p_hat}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"wilson_interval: level must be in (0, 1), got {level}")
    if n < 0:
        raise ValueError(f"wilson_interval: n must be >= 0, got {n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2.0)
    z2n = z * z / n
    centre = (p_hat + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p_hat * (1.0 - p_hat) / n + z2n / (4.0 * n))
    # Clamp rounding error only (the exact bounds lie in [0, 1]).
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class WinRate:
    """A win rate with its interval: `rate` = (wins + ties/2)/n for hard verdicts."""

    rate: float
    low: float
    high: float
    n: int
    wins: int
    ties: int
    losses: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        pct = 100.0 * self.level
        return (
            f"{100 * self.rate:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] ({pct:.0f}% CI; "
            f"{self.wins} W / {self.ties} T / {self.losses} L of {self.n})"
        )


def win_rate(outcomes: Sequence[float], level: float = 0.95) -> WinRate:
    """Mean of per-prompt outcomes in [0, 1] (1 win, ½ tie, 0 loss) with a Wilson interval.

    `wins`/`ties`/`losses` count outcomes > ½, = ½ and < ½. Raises ValueError for an outcome
    outside [0, 1] or NaN.
    """
    values = [float(o) for o in outcomes]
    for i, v in enumerate(values):
        if not 0.0 <= v <= 1.0:  # also rejects NaN
            raise ValueError(f"win_rate: outcome {i} is {v}; outcomes must lie in [0, 1]")
    n = len(values)
    rate = sum(values) / n if n else 0.5
    low, high = wilson_interval(rate, n, level)
    wins = sum(v > 0.5 for v in values)
    ties = sum(v == 0.5 for v in values)
    return WinRate(rate, low, high, n, wins, ties, n - wins - ties, level)
