"""KL estimators, KL-shaped per-token rewards, and KL coefficient controllers.

Implementation details and their sources:

1. Per-token KL estimators between the policy π and the reference π_ref from samples of π, with
   d = log π(y_t) − log π_ref(y_t) (J. Schulman, "Approximating KL divergence", 2020):
   k1 = d (unbiased, can be negative), k2 = ½·d² (biased, low variance),
   k3 = exp(−d) − 1 + d (unbiased, always ≥ 0). TRL `PPOTrainer` and OpenRLHF
   `compute_approx_kl` offer the same three.
2. Reward shaping as in Ziegler et al. 2019 and InstructGPT (Ouyang et al. 2022, eq. 2):
   r_t = −β·KL_t on every valid response token, and the sequence score is added on the last
   valid token only (the EOS when generated). The last valid index is found per row from the
   mask, so left- and right-padded rows both work; a score on a pad after EOS is the bug TRL
   issue threads describe.
3. KL as a loss term (GRPO, Shao et al. 2024): `kl_loss` is the same estimate with the gradient
   flowing through the policy's log-probs, added to the policy loss instead of the reward.
4. Adaptive KL coefficient from Ziegler et al. 2019 §2.2: e = clip(KL/target − 1, −0.2, 0.2),
   β ← β·(1 + e·n_steps/horizon); checked against TRL `AdaptiveKLController`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from rlhfkit.core.stats import masked_sum

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLEstimator",
    "best_of_n_kl",
    "kl_loss",
    "kl_penalty",
    "last_valid_index",
    "shape_rewards",
]

KLEstimator = Literal["k1", "k2", "k3"]


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator
) -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from log-probs of tokens sampled from π.

    With d = logprobs − ref_logprobs: "k1" → d; "k2" → ½·d²; "k3" → exp(−d) − 1 + d.
    Shapes: any, elementwise (usually (B, T)); no mask (apply one downstream).
    Reference: Schulman 2020 "Approximating KL divergence"; OpenRLHF `compute_approx_kl`.
    """
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d.square()
    if estimator == "k3":
        # expm1(-d) + d cancels catastrophically for tiny d (it returns 0 for |d| < 1e-17 in
        # float64, so k3 would be 0 for different logprobs); below |d| = 1e-3 use the Taylor
        # series d²/2 − d³/6 + d⁴/24 − d⁵/120 + d⁶/720 (relative error < 1e-18 there).
        series = d.square() * (0.5 - d * (1 / 6 - d * (1 / 24 - d * (1 / 120 - d / 720))))
        return torch.where(d.abs() < 1e-3, series, torch.expm1(-d) + d)
    raise ValueError(f"kl_penalty: unknown estimator {estimator!r}; use 'k1', 'k2' or 'k3'")


def kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: KLEstimator = "k3",
) -> torch.Tensor:
    """Per-token KL(π ‖ π_ref) *as a loss term* (GRPO): `kl_penalty` with the gradient flowing
    through `logprobs` (the reference is a constant), 0 at masked positions.

    Reduce it with `aggregate_loss` like the policy loss and add β times it (Shao et al. 2024,
    DeepSeekMath eq. 3-4 use k3: π_ref/π − log(π_ref/π) − 1). Shapes: (B, T) → (B, T).
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    d = torch.where(mask, logprobs - ref_logprobs.detach(), torch.zeros_like(logprobs))
    per_token = kl_penalty(d, torch.zeros_like(d), estimator)
    return torch.where(mask, per_token, torch.zeros_like(per_token))


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True in each row of a (B, T) mask → (B,) int64.

    Works for left padding, right padding and holes. Raises ValueError if a row has no valid
    position (a score would have nowhere to go).
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    has_valid = mask.any(dim=1)
    if not bool(has_valid.all()):
        empty = torch.nonzero(~has_valid).flatten().tolist()
        raise ValueError(f"rows {empty} have no valid token in the mask")
    t = mask.shape[1]
    positions = torch.arange(t, device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).amax(dim=1)


def shape_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Per-token rewards: −kl_coef·KL_t on valid tokens, plus `scores[b]` on row b's last valid token.

    rewards[b, t] = [mask[b, t]]·(−β·kl_penalty(logprobs, ref_logprobs, estimator)[b, t])
                    + [t = last valid index of row b]·scores[b]
    Shapes: `scores` (B,); `logprobs`, `ref_logprobs`, `mask` (B, T), mask True = valid response
    token; → (B, T) in the dtype of `logprobs`, 0 at masked positions (NaN there never leaks).
    Reference: Ziegler et al. 2019; InstructGPT eq. 2; TRL `PPOTrainer` reward computation.
    """
    mask = mask if mask.dtype == torch.bool else mask != 0
    if scores.shape != mask.shape[:1]:
        raise ValueError(
            f"shape_rewards: scores {tuple(scores.shape)} must be (B,) for mask {tuple(mask.shape)}"
        )
    kl = kl_penalty(logprobs, ref_logprobs, estimator)
    rewards = torch.where(mask, -kl_coef * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    last = last_valid_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


class FixedKLController:
    """A constant KL coefficient β; `update` does nothing. Same interface as the adaptive one."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Keep β fixed (present so trainers can call either controller the same way)."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller driving the measured KL toward `target` (Ziegler et al. 2019 §2.2).

    On `update(current_kl, n_steps)`: e = clip(current_kl/target − 1, −0.2, 0.2) and
    β ← β·(1 + e·n_steps/horizon). `n_steps` is the number of samples (or steps) the KL was
    measured on, `horizon` how many of them a full correction should take (paper: 10,000).
    Reference: TRL `AdaptiveKLController`.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController needs target > 0 and horizon > 0, got {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


def sequence_kl(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Per-sequence KL(π ‖ π_ref) estimate: Σ_t [mask]·k(log π − log π_ref) → (B,) float.

    Shapes: `logprobs`, `ref_logprobs`, `response_mask` (B, T); mask True = valid response token;
    the responses must be samples of π for the estimate to be unbiased. Masked positions (even
    NaN) are ignored. Reference: Schulman 2020; InstructGPT §C.4; Gao et al. 2022 §2.
    """
    if logprobs.shape != ref_logprobs.shape or logprobs.shape != response_mask.shape:
        raise ValueError(
            f"sequence_kl: shapes differ: logprobs {tuple(logprobs.shape)}, ref_logprobs "
            f"{tuple(ref_logprobs.shape)}, response_mask {tuple(response_mask.shape)}"
        )
    return masked_sum(
        kl_penalty(logprobs.float(), ref_logprobs.float(), estimator), response_mask, dim=1
    )


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ π) = log n − (n − 1)/n nats: the policy that samples n replies from π and
    keeps the highest-scoring one (exact for continuous scores without ties; an upper bound
    with ties). n = 1 gives 0. Reference: Stiennon et al. 2020, appendix G.3; Gao et al. 2022
    use it to put best-of-n and RL on one KL axis."""
    if n < 1:
        raise ValueError(f"best_of_n_kl: n must be ≥ 1, got {n}")
    return math.log(n) - (n - 1) / n
