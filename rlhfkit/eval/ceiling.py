"""Best-of-n ceilings: how far a policy close to the reference could go, and how far its reward
model lets it go.

For each prompt, n replies are sampled from the reference policy (the SFT model) and one is kept:
the best by the **gold scorer** (an oracle selector, in the simulated world) or the best by the
**reward model** (a best-of-n policy rlhfkit can actually run). Each kept reply is judged against
the reference policy's own reply to the same prompt under the gold judge (1 win, ½ tie, 0 loss),
which is how the demo's PPO-vs-SFT win rate is judged. So, at a comparable distance from SFT:

- the oracle row is what the world allows (the selector knows the true preference);
- the RM row is what the reward model allows by selection alone;
- PPO's own win rate sits beside them. Oracle ≈ PPO says the world (or the model's ability)
  is the limit. Oracle ≫ PPO does *not* by itself say the reward model is: the oracle picks,
  for each test prompt, the sample that happens to be right, which a policy trained on other
  prompts can only match where it has learned to be right. Train PPO against the gold scorer
  itself to tell the two apart (`benchmarks/demo_gold_reward.py`): if that PPO is no better
  than PPO against the RM, the RM is not the limit.

Distance: the best-of-n policy's KL to the policy it samples from is at most
log n − (n − 1)/n nats (Stiennon et al. 2020, appendix; exact for continuous scores, an upper
bound with ties), and best-of-n is close to the best reward reachable at that KL on the same
prompts (Gao et al. 2022), so the row whose bound matches PPO's KL is an upper reference for
PPO at its KL leash (an optimistic one: see above).

Sampling and selection are `rlhfkit.algos.bon` (`rlhfkit bon`): the same replies, the same
rule (ties go to the earliest sample, a fixed rule independent of the scores).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhfkit.algos import bon
from rlhfkit.algos.bon import pick_best
from rlhfkit.core import best_of_n_kl
from rlhfkit.eval.judges import score_outcomes
from rlhfkit.eval.winrate import WinRate, win_rate
from rlhfkit.rollout import CallableScorer, RewardModelScorer

__all__ = [
    "CeilingRow",
    "best_of_n_kl_bound",
    "ceiling_rows",
    "row_near_kl",
    "sample_candidates",
]


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n ‖ base) ≤ log n − (n − 1)/n nats (`core.best_of_n_kl`)."""
    return best_of_n_kl(n)


@dataclass(frozen=True)
class CeilingRow:
    """One n: the oracle's and (when given) the reward model's best-of-n against the reference."""

    n: int
    kl_bound: float
    oracle: WinRate
    oracle_gold_mean: float
    rm: WinRate | None
    rm_gold_mean: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "kl_bound": self.kl_bound,
            "oracle": self.oracle.to_dict(),
            "oracle_gold_mean": self.oracle_gold_mean,
            "rm": None if self.rm is None else self.rm.to_dict(),
            "rm_gold_mean": self.rm_gold_mean,
        }


def _pick(gold: Sequence[float], selector: Sequence[float], n: int) -> float:
    """Gold score of the first of the first n candidates with the highest selector score."""
    return gold[pick_best(selector, n)]


def ceiling_rows(
    candidate_gold: Sequence[Sequence[float]],
    reference_gold: Sequence[float],
    ns: Sequence[int],
    candidate_rm: Sequence[Sequence[float]] | None = None,
) -> list[CeilingRow]:
    """Best-of-n win rates against the reference replies, one row per n.

    `candidate_gold[i]` (and `candidate_rm[i]`) hold the scores of the candidates sampled for
    prompt i, in sampling order (at least max(ns) each); `reference_gold[i]` the gold score of
    the reference reply. The best-of-n candidate is chosen among the first n.
    """
    if len(candidate_gold) != len(reference_gold):
        raise ValueError(
            f"ceiling_rows: {len(candidate_gold)} prompts with candidates, "
            f"{len(reference_gold)} reference replies"
        )
    if candidate_rm is not None and len(candidate_rm) != len(candidate_gold):
        raise ValueError("ceiling_rows: candidate_rm and candidate_gold differ in length")
    rows = []
    for n in sorted(set(ns)):
        if any(len(g) < n for g in candidate_gold):
            raise ValueError(f"ceiling_rows: n={n} needs {n} candidates for every prompt")
        oracle = [_pick(g, g, n) for g in candidate_gold]
        by_rm = None
        if candidate_rm is not None:
            by_rm = [_pick(g, r, n) for g, r in zip(candidate_gold, candidate_rm, strict=True)]
        rows.append(
            CeilingRow(
                n=n,
                kl_bound=best_of_n_kl_bound(n),
                oracle=win_rate(score_outcomes(oracle, reference_gold)),
                oracle_gold_mean=sum(oracle) / len(oracle),
                rm=None if by_rm is None else win_rate(score_outcomes(by_rm, reference_gold)),
                rm_gold_mean=None if by_rm is None else sum(by_rm) / len(by_rm),
            )
        )
    return rows


def sample_candidates(
    policy: torch.nn.Module,
    tokenizer: Any,
    records: Sequence[Any],
    rollout_cfg: Any,
    n: int,
    seed: int,
    gold: Callable[[list[Any], list[str]], list[float]],
    reward_model: Any = None,
) -> tuple[list[list[float]], list[list[float]] | None]:
    """n samples per prompt record from `policy` (`algos.bon.sample_candidates`); their gold
    scores (and reward-model scores, read on the sampled token ids) as per-prompt lists in
    sampling order."""
    scorers: dict[str, Any] = {"gold": CallableScorer(gold, name="gold")}
    if reward_model is not None:
        scorers["rm"] = RewardModelScorer(reward_model)
    cand = bon.sample_candidates(policy, tokenizer, records, rollout_cfg, n, seed, scorers)
    return cand.scores["gold"], cand.scores.get("rm")


def row_near_kl(rows: Sequence[dict[str, Any]], kl: float) -> dict[str, Any]:
    """The `CeilingRow.as_dict()` row whose KL bound is nearest to `kl` (PPO's KL to SFT)."""
    if not rows:
        raise ValueError("row_near_kl: no ceiling rows")
    return min(rows, key=lambda r: abs(r["kl_bound"] - kl))
