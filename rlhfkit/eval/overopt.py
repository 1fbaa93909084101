"""Over-optimisation: proxy (reward-model) and gold reward against √KL during RL.

Gao, Schulman & Hilton 2022 ("Scaling Laws for Reward Model Overoptimization") plot the proxy RM
score and the gold score of the policy against d = √KL(π ‖ π_ref): the proxy keeps rising while the
gold score peaks and then falls — Goodhart's law, the reward model being "fooled". For RL they fit

    R_gold(d) = d·(α − β·ln d)                                   (Gao et al. 2022, eq. 2, RL form)

which is linear in (α, β), so ordinary least squares on the design [d, −d·ln d] gives the fit;
its maximum is at d* = exp(α/β − 1) when β > 0. Points with d = 0 contribute nothing (R(0) = 0,
as d·ln d → 0).

Implementation details:
1. `overoptimisation_curve` reads the PPO metrics rows that carry `eval/kl_to_ref`
   (the per-sequence KL to the reference, nats), `eval/rm_score` and `eval/gold`, as logged every
   `eval_every` iterations, and returns them sorted by step with d = √max(KL, 0) (a Monte-Carlo
   KL estimate can come out slightly negative early on).
2. Scores are reported as the change from the first evaluation (step 0 = the SFT policy), which is
   how Gao et al. plot them and makes proxy and gold comparable on one axis despite different scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OverOptCurve", "overoptimisation_curve"]

KL_KEY, RM_KEY, GOLD_KEY = "eval/kl_to_ref", "eval/rm_score", "eval/gold"


@dataclass(frozen=True)
class OverOptCurve:
    """Evaluations of one RL run: step, KL, d = √KL, proxy (RM) and gold mean scores."""

    step: list[int]
    kl: list[float]
    sqrt_kl: list[float]
    rm: list[float]
    gold: list[float]

    def __len__(self) -> int:
        return len(self.step)

    @property
    def rm_change(self) -> float:
        """Proxy score at the last evaluation minus at the first."""
        return self.rm[-1] - self.rm[0] if self.rm else math.nan

    @property
    def gold_change(self) -> float:
        """Gold score at the last evaluation minus at the first."""
        return self.gold[-1] - self.gold[0] if self.gold else math.nan

    @property
    def gold_peak_step(self) -> int | None:
        """Step of the best gold score (earlier step on ties)."""
        if not self.gold:
            return None
        return self.step[max(range(len(self.gold)), key=lambda i: (self.gold[i], -i))]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def overoptimisation_curve(rows: Sequence[dict[str, Any]]) -> OverOptCurve:
    """The (step, KL, √KL, RM, gold) evaluations found in metrics rows, sorted by step.

    Rows without all three keys (training steps between evaluations) are skipped; a row whose
    values are not finite numbers is skipped too (a NaN logged as the string "nan").
    """
    points = sorted(
        (int(r["step"]), float(r[KL_KEY]), float(r[RM_KEY]), float(r[GOLD_KEY]))
        for r in rows
        if all(_finite(r.get(k)) for k in (KL_KEY, RM_KEY, GOLD_KEY))
    )
    return OverOptCurve(
        step=[p[0] for p in points],
        kl=[p[1] for p in points],
        sqrt_kl=[math.sqrt(max(p[1], 0.0)) for p in points],
        rm=[p[2] for p in points],
        gold=[p[3] for p in points],
    )
