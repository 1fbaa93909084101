"""Losses: loss reduction, PPO policy (clip and penalty) and value losses, reward-model, DPO,
ORPO and KTO losses, SFT negative log-likelihood.

Implementation details and their sources:

1. Reduction is its own function, `aggregate_loss`, and takes the *global* normaliser (tokens or
   sequences in the whole optimiser step, over all micro-batches and processes). Then the sum of
   micro-batch gradients equals the big-batch gradient; dividing each micro-batch by its own
   count does not (the bug behind TRL/OpenRLHF gradient-accumulation issues and "Dr. GRPO",
   Liu et al. 2025 §3). How a trainer must call it is in its docstring.
2. PPO-Clip (Schulman et al. 2017 eq. 7): per token max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with
   ρ = exp(logprobs − old_logprobs); diagnostics as in CleanRL ppo.py: clip fraction and
   approx_kl = mean((ρ − 1) − log ρ) (Schulman's k3 estimator of KL(π_old ‖ π)).
   Clip-higher (DAPO, Yu et al. 2025: separate ε_low / ε_high) and dual clip (Ye et al. 2020:
   for A < 0 the loss is bounded by −c·A) are options of the same function.
3. PPO-Penalty (Schulman et al. 2017 eq. 8): −ρ·A + β·KL(π_old ‖ π) with the per-token k3
   estimate (ρ − 1) − log ρ, unbiased under samples from π_old.
4. Clipped value loss (OpenAI baselines ppo2, CleanRL `clip_vloss`, MOSS-RLHF PPO-Max):
   ½·max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²).
5. Bradley–Terry reward-model loss −log σ(r_w − r_l − m) (InstructGPT eq. 1; margin from Llama 2,
   Touvron et al. 2023 §3.2.2); K-way ranking as the mean over all K(K−1)/2 ordered pairs
   (InstructGPT: all pairs of a prompt in one batch element).
6. DPO (Rafailov et al. 2023 eq. 7), conservative label smoothing (Mitchell 2023, cDPO) and
   IPO (Azar et al. 2023 eq. 17), checked against TRL `DPOTrainer.dpo_loss`; SimPO (Meng et al.
   2024 eq. 6), reference-free, on length-normalised log-probs with a target margin γ, checked
   against TRL `CPOTrainer` (`loss_type="simpo"`). The per-pair forms (`dpo_sigmoid_losses`,
   `ipo_losses`, `simpo_losses`) leave the reduction to the trainer, which divides by the
   step's global pair count (detail 1).
7. ORPO (Hong et al. 2024 eqs. 2–7): the chosen reply's token-mean NLL plus λ times
   −log σ(log odds ratio), reference-free, checked against TRL `ORPOTrainer.odds_ratio_loss`.
8. KTO (Ethayarajh et al. 2024 eq. 8): λ_y − v(x, y), the value σ(β·(r − z₀)) of a desirable
   reply and σ(β·(z₀ − r)) of an undesirable one around the reference point z₀, itself the
   clamped, detached mean log-ratio of mismatched pairs (`kto_reference_point`); checked
   against TRL `KTOTrainer.kto_loss`.
9. `logsigmoid` is used instead of log(sigmoid(·)) so large margins do not underflow.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from rlhfkit.core.logprobs import gather_logprobs
from rlhfkit.core.stats import masked_mean, masked_sum

__all__ = [
    "DPOLossOutput",
    "LossMode",
    "PreferenceLosses",
    "PairwiseLossOutput",
    "PolicyLossOutput",
    "SFTLossOutput",
    "ValueLossOutput",
    "aggregate_loss",
    "dpo_loss",
    "dpo_sigmoid_losses",
    "ipo_losses",
    "kto_losses",
    "kto_reference_point",
    "KTOLosses",
    "orpo_losses",
    "ORPOLosses",
    "pairwise_loss",
    "policy_gradient_loss",
    "ppo_penalty_loss",
    "ppo_policy_loss",
    "ranking_loss",
    "sft_loss",
    "simpo_losses",
    "value_loss",
]

LossMode = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"]


def _bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: LossMode,
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar so that accumulation matches one big batch.

    Modes (ℓ = per_token, m = mask, True = valid; masked values, even NaN, are ignored):
    - "token_mean": Σ_{b,t} m·ℓ / N, N = `num_tokens` (default: max(1, Σ m) of this batch).
    - "seq_mean_token_mean": Σ_b (Σ_t m·ℓ / max(1, Σ_t m)) / S, S = `num_seqs` (default: B).
    - "seq_mean_token_sum": Σ_b Σ_t m·ℓ / S.

    How a trainer calls it so that 1 batch × 8 ≡ 8 micro-batches × 1 ≡ W processes:
    1. Before the optimiser step, count the valid tokens N (token_mean) or the sequences S
       (seq_mean_*) of *all* micro-batches that the step will accumulate, summed over all
       processes (an all-reduce of the count).
    2. On each micro-batch call `aggregate_loss(..., num_tokens=N / W)` (resp. `num_seqs=S / W`),
       where W is the number of data-parallel processes whose gradients DDP/FSDP/ZeRO *average*
       (W = 1 on one process), and call `backward()` on the result unscaled: gradients sum over
       micro-batches and average over processes, which gives ∇(Σ_all m·ℓ / N).
    3. Accelerate's `accelerator.backward` divides the loss by `gradient_accumulation_steps` M;
       with it, pass `num_tokens = N / (W·M)` instead.
    Reference: Liu et al. 2025 ("Understanding R1-Zero-like training", Dr. GRPO) §3; OpenRLHF
    and verl `agg_loss` offer the same modes.
    """
    mask = _bool(mask)
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"aggregate_loss: per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} "
            "must both be (B, T)"
        )
    if mode == "token_mean":
        # an all-padding batch with no global count given: loss 0 (and zero gradient), not 0/0.
        denominator = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
        return masked_sum(per_token, mask) / denominator
    seqs = mask.shape[0] if num_seqs is None else num_seqs
    if mode == "seq_mean_token_mean":
        return masked_mean(per_token, mask, dim=1).sum() / seqs
    if mode == "seq_mean_token_sum":
        return masked_sum(per_token, mask, dim=1).sum() / seqs
    raise ValueError(
        f"aggregate_loss: unknown mode {mode!r}; use 'token_mean', 'seq_mean_token_mean' "
        "or 'seq_mean_token_sum'"
    )


class PolicyLossOutput(NamedTuple):
    """`loss` carries the gradient; the rest are detached token-mean diagnostics of this batch."""

    loss: torch.Tensor
    clipfrac: torch.Tensor  # fraction of valid tokens where the clipped term was chosen
    approx_kl: torch.Tensor  # mean of (ρ − 1) − log ρ, estimates KL(π_old ‖ π)
    ratio_mean: torch.Tensor  # mean of ρ = π/π_old
    ratio_max: torch.Tensor  # max of ρ over valid tokens
    clipfrac_low: torch.Tensor | None = None  # clipped at 1 − ε_low (A < 0), share of tokens
    clipfrac_high: torch.Tensor | None = None  # clipped at 1 + ε_high (A > 0), share of tokens
    dual_clipfrac: torch.Tensor | None = None  # bounded by the dual clip −c·A (A < 0)


class ValueLossOutput(NamedTuple):
    loss: torch.Tensor
    clipfrac: torch.Tensor  # fraction of valid tokens where the clipped error was larger
    value_error: torch.Tensor  # mean of (V − R)², unclipped, detached


def _ratio_stats(
    log_ratio: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ratio = torch.exp(log_ratio)
    with torch.no_grad():
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
        ratio_mean = masked_mean(ratio, mask)
        ratio_max = torch.where(mask, ratio, torch.full_like(ratio, -torch.inf)).max()
    return ratio, approx_kl, ratio_mean, ratio_max


def _log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    # zero at masked positions so exp() of garbage never reaches a gradient (NaN * 0 = NaN).
    return torch.where(mask, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    mode: LossMode = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
) -> PolicyLossOutput:
    """PPO-Clip surrogate loss (to minimise), with optional clip-higher and dual clip.

    ρ_t = exp(logprobs_t − old_logprobs_t); ℓ_t = max(−A_t·ρ_t, −A_t·clip(ρ_t, 1−ε_low, 1+ε_high))
    with ε_low = `clip_eps`, ε_high = `clip_eps_high` (default ε_low; DAPO "clip-higher", Yu et
    al. 2025 eq. 10, uses 0.2 / 0.28). Dual clip (Ye et al. 2020, "Mastering complex control in
    MOBA games", eq. 5; `clip_ratio_c` = c > 1): where A_t < 0, ℓ_t = min(ℓ_t, −c·A_t), so a
    huge ratio on a bad token cannot make the loss unbounded. loss = aggregate_loss(ℓ, mask,
    mode, …). Where a clip is active the token's gradient is exactly 0.
    Shapes: all (B, T), mask True = valid; `old_logprobs` and `advantages` are constants.
    Reference: Schulman et al. 2017 eq. 7; CleanRL ppo.py (`pg_loss`, `clipfracs`,
    `approx_kl`); verl `compute_policy_loss` (clip_ratio_low/high/c).
    """
    mask = _bool(mask)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"ppo_policy_loss: clip_ratio_c must be > 1, got {clip_ratio_c}")
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)
    ratio, approx_kl, ratio_mean, ratio_max = _ratio_stats(log_ratio, mask)
    advantages = torch.where(mask, advantages.detach(), torch.zeros_like(advantages))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(per_token, dtype=torch.bool)
    if clip_ratio_c is not None:
        bound = -clip_ratio_c * advantages
        dual = (advantages < 0) & (per_token > bound)
        per_token = torch.where(dual, bound, per_token)
    loss = aggregate_loss(per_token, mask, mode, num_tokens=num_tokens, num_seqs=num_seqs)
    with torch.no_grad():
        chose_clip = clipped > unclipped
        dtype = per_token.dtype
        clipfrac = masked_mean(chose_clip.to(dtype), mask)
        low = masked_mean((chose_clip & (advantages < 0)).to(dtype), mask)
        high = masked_mean((chose_clip & (advantages > 0)).to(dtype), mask)
        dual_frac = masked_mean(dual.to(dtype), mask)
    return PolicyLossOutput(loss, clipfrac, approx_kl, ratio_mean, ratio_max, low, high, dual_frac)


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    mode: LossMode = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> PolicyLossOutput:
    """The plain (unclipped) REINFORCE-style surrogate: ℓ_t = −A_t·ρ_t, ρ_t = π/π_old.

    On the samples' own policy (ρ = 1, one update per rollout) its gradient is the REINFORCE
    estimator −A_t·∇log π(y_t) (Williams 1992); off-policy it is the importance-weighted one.
    Shapes: (B, T), mask True = valid. Reference: verl `policy_loss.loss_mode = "vanilla"`
    without the clip; RLOO (Ahmadian et al. 2024) trains with this form.
    """
    mask = _bool(mask)
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)
    ratio, approx_kl, ratio_mean, ratio_max = _ratio_stats(log_ratio, mask)
    advantages = torch.where(mask, advantages.detach(), torch.zeros_like(advantages))
    per_token = -advantages * ratio
    loss = aggregate_loss(per_token, mask, mode, num_tokens=num_tokens, num_seqs=num_seqs)
    zero = torch.zeros_like(approx_kl)
    return PolicyLossOutput(loss, zero, approx_kl, ratio_mean, ratio_max, zero, zero, zero)


def ppo_penalty_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    mode: LossMode = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> PolicyLossOutput:
    """PPO-Penalty (KL-penalised surrogate) loss (to minimise).

    ℓ_t = −ρ_t·A_t + β·((ρ_t − 1) − log ρ_t), ρ_t = exp(logprobs_t − old_logprobs_t), the second
    term the k3 estimate of KL(π_old ‖ π) at the sampled token; loss = aggregate_loss(ℓ, …).
    Adapt β between updates with `AdaptiveKLController` on `approx_kl` (the paper's rule).
    `clipfrac` is 0 (nothing is clipped); the output type matches `ppo_policy_loss` so trainers
    log both alike. Shapes: (B, T), mask True = valid. Reference: Schulman et al. 2017 eq. 8.
    """
    mask = _bool(mask)
    log_ratio = _log_ratio(logprobs, old_logprobs, mask)
    ratio, approx_kl, ratio_mean, ratio_max = _ratio_stats(log_ratio, mask)
    advantages = torch.where(mask, advantages.detach(), torch.zeros_like(advantages))
    per_token = -advantages * ratio + kl_coef * (ratio - 1.0 - log_ratio)
    loss = aggregate_loss(per_token, mask, mode, num_tokens=num_tokens, num_seqs=num_seqs)
    zero = torch.zeros_like(approx_kl)
    return PolicyLossOutput(loss, zero, approx_kl, ratio_mean, ratio_max, zero, zero, zero)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = None,
    mode: LossMode = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> ValueLossOutput:
    """Critic loss, optionally clipped around the rollout values.

    Unclipped: ℓ_t = ½·(V_t − R_t)². Clipped (clip_eps = c):
    ℓ_t = ½·max((V_t − R_t)², (clip(V_t, V_old_t − c, V_old_t + c) − R_t)²).
    loss = aggregate_loss(ℓ, mask, mode, …). Shapes: (B, T), mask True = valid; `old_values`
    and `returns` are constants. Reference: OpenAI baselines ppo2 `vf_losses`; CleanRL ppo.py
    `clip_vloss`; MOSS-RLHF PPO-Max value clipping.
    """
    mask = _bool(mask)
    zero = torch.zeros_like(values)
    returns = torch.where(mask, returns.detach(), zero)
    values = torch.where(mask, values, zero)
    error = (values - returns).square()
    if clip_eps is None:
        per_token = 0.5 * error
        clipfrac = torch.zeros((), dtype=values.dtype, device=values.device)
    else:
        old_values = torch.where(mask, old_values.detach(), zero)
        # inside the band the clipped value *is* V (old + (V − old) can differ from V by one
        # rounding, which would count as "clipped" and make clipfrac noise)
        delta = values - old_values
        clipped_values = torch.where(
            delta.abs() > clip_eps, old_values + torch.clamp(delta, -clip_eps, clip_eps), values
        )
        clipped_error = (clipped_values - returns).square()
        per_token = 0.5 * torch.maximum(error, clipped_error)
        clipfrac = masked_mean((clipped_error > error).to(values.dtype), mask).detach()
    loss = aggregate_loss(per_token, mask, mode, num_tokens=num_tokens, num_seqs=num_seqs)
    return ValueLossOutput(loss, clipfrac, masked_mean(error, mask).detach())


class PairwiseLossOutput(NamedTuple):
    loss: torch.Tensor
    accuracy: torch.Tensor  # fraction of pairs with preferred score > other score (detached)
    score_gap: torch.Tensor  # mean of preferred score − other score (detached)


def pairwise_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: float | torch.Tensor = 0.0,
) -> PairwiseLossOutput:
    """Bradley–Terry reward-model loss: mean_b −log σ(r_w,b − r_l,b − m_b).

    Shapes: `chosen_scores`, `rejected_scores` (B,); `margin` a float or (B,) tensor (Llama 2's
    preference-strength margin; 0 gives the InstructGPT loss). Reference: InstructGPT eq. 1;
    Touvron et al. 2023 eq. 2; TRL `RewardTrainer.compute_loss`.
    """
    if chosen_scores.shape != rejected_scores.shape or chosen_scores.dim() != 1:
        raise ValueError(
            f"pairwise_loss: chosen {tuple(chosen_scores.shape)} and rejected "
            f"{tuple(rejected_scores.shape)} must both be (B,)"
        )
    gap = chosen_scores - rejected_scores
    loss = -F.logsigmoid(gap - margin).mean()
    gap = gap.detach()
    return PairwiseLossOutput(loss, (gap > 0).to(gap.dtype).mean(), gap.mean())


def ranking_loss(scores: torch.Tensor) -> PairwiseLossOutput:
    """K-way ranking loss: mean over the B·K(K−1)/2 pairs (i < j) of −log σ(s_{b,i} − s_{b,j}).

    Shapes: `scores` (B, K), column 0 the most preferred answer, K ≥ 2. With K = 2 this is
    `pairwise_loss(scores[:, 0], scores[:, 1])`. Reference: InstructGPT eq. 1 (all pairs of the
    K ranked answers to a prompt, averaged over the K choose 2 comparisons).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"ranking_loss: scores must be (B, K) with K >= 2, got {tuple(scores.shape)}"
        )
    k = scores.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=scores.device), diagonal=1)
    # gap[b, i, j] = s_i - s_j; pairs with i < j say answer i beat answer j.
    gaps = (scores.unsqueeze(2) - scores.unsqueeze(1))[:, upper]
    loss = -F.logsigmoid(gaps).mean()
    gaps = gaps.detach()
    return PairwiseLossOutput(loss, (gaps > 0).to(gaps.dtype).mean(), gaps.mean())


class PreferenceLosses(NamedTuple):
    """Per-pair results of an offline preference loss (no reduction: the trainer divides the sum
    by the step's global pair count)."""

    losses: torch.Tensor  # (B,) the loss of each pair, with gradient
    chosen_rewards: torch.Tensor  # (B,) implicit reward of the chosen reply, detached
    rejected_rewards: torch.Tensor  # (B,) implicit reward of the rejected reply, detached


def _log_ratios(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps,
                                        ref_chosen_logps, ref_rejected_logps)}  # fmt: skip
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(
            f"preference loss: the four log-prob tensors must share one (B,) shape, got {shapes}"
        )
    return (
        policy_chosen_logps - ref_chosen_logps.detach(),
        policy_rejected_logps - ref_rejected_logps.detach(),
    )


def dpo_sigmoid_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceLosses:
    """DPO, per pair: ℓ = −(1 − s)·log σ(β·h) − s·log σ(−β·h) with
    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)).

    s = `label_smoothing` ∈ [0, ½) is conservative DPO (cDPO: each label is flipped with
    probability s; s = 0 is DPO). Rewards: β·(log π − log π_ref) of each reply. Shapes: all
    four (B,) summed response log-probs → (B,). With h = 0, ℓ = log 2.
    Reference: Rafailov et al. 2023 eq. 7; Mitchell 2023 ("A note on DPO with noisy
    preferences"); TRL `DPOTrainer.dpo_loss` (`loss_type="sigmoid"`, `label_smoothing`).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    z = beta * (chosen - rejected)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return PreferenceLosses(losses, beta * chosen.detach(), beta * rejected.detach())


def ipo_losses(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> PreferenceLosses:
    """IPO, per pair: ℓ = (h − 1/(2β))², h as in `dpo_sigmoid_losses` (β is IPO's τ).

    A squared loss toward a finite margin 1/(2β) instead of pushing h → ∞, so it does not
    overfit deterministic preferences. TRL feeds it token-*mean* log-probs (the trainer decides;
    this function takes whatever (B,) log-probs it is given). Rewards: β·(log π − log π_ref).
    Reference: Azar et al. 2023 eq. 17; TRL `DPOTrainer.dpo_loss` (`loss_type="ipo"`).
    """
    chosen, rejected = _log_ratios(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    losses = (chosen - rejected - 1.0 / (2.0 * beta)).square()
    return PreferenceLosses(losses, beta * chosen.detach(), beta * rejected.detach())


def simpo_losses(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float,
    gamma: float,
) -> PreferenceLosses:
    """SimPO, per pair (reference-free): ℓ = −log σ(β·ā_w − β·ā_l − γ), ā = the reply's
    token-*mean* log-prob under the policy, γ the target reward margin.

    Rewards: β·ā of each reply (no reference model). Shapes (B,) → (B,). With ā_w = ā_l and
    γ = 0, ℓ = log 2. Reference: Meng, Xia & Chen 2024 ("SimPO"), eq. 6 (defaults there:
    β 2.0–2.5, γ/β ≈ 0.5); TRL `CPOTrainer` (`loss_type="simpo"`, `simpo_gamma`).
    """
    if chosen_avg_logps.shape != rejected_avg_logps.shape or chosen_avg_logps.dim() != 1:
        raise ValueError("simpo_losses: chosen and rejected must both be (B,)")
    chosen, rejected = beta * chosen_avg_logps, beta * rejected_avg_logps
    losses = -F.logsigmoid(chosen - rejected - gamma)
    return PreferenceLosses(losses, chosen.detach(), rejected.detach())


class ORPOLosses(NamedTuple):
    losses: torch.Tensor  # (B,) per-pair loss: NLL of the chosen reply + λ·odds-ratio term
    chosen_rewards: torch.Tensor  # (B,) λ·ā_w, detached (TRL's ORPO "rewards")
    rejected_rewards: torch.Tensor  # (B,) λ·ā_l, detached
    nll: torch.Tensor  # (B,) −ā_w, detached: the SFT part
    log_odds_ratio: torch.Tensor  # (B,) log odds(y_w) − log odds(y_l), detached


def orpo_losses(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    lam: float,
) -> ORPOLosses:
    """ORPO, per pair (no reference model): ℓ = −ā_w − λ·log σ(log OR) with
    log OR = log odds(y_w) − log odds(y_l), odds(y) = P(y) / (1 − P(y)), P(y) = exp(ā),
    ā = the reply's token-*mean* log-prob under the policy.

    −ā_w is the SFT negative log-likelihood of the chosen reply (token mean); the second term
    raises the odds of the chosen reply over the rejected one. log(1 − e^ā) is computed as
    log(−expm1(ā)), exact for ā near 0. Shapes (B,) → (B,); with ā_w = ā_l, ℓ = −ā_w + λ·log 2.
    Reference: Hong, Lee & Thorne 2024 ("ORPO"), eqs. 2–7 (λ = 0.1 there for most runs);
    TRL `ORPOTrainer.odds_ratio_loss` (its `beta` is λ; rewards β·ā).
    """
    if chosen_avg_logps.shape != rejected_avg_logps.shape or chosen_avg_logps.dim() != 1:
        raise ValueError("orpo_losses: chosen and rejected must both be (B,)")
    log_odds = (chosen_avg_logps - rejected_avg_logps) - (
        torch.log(-torch.expm1(chosen_avg_logps)) - torch.log(-torch.expm1(rejected_avg_logps))
    )
    losses = -chosen_avg_logps - lam * F.logsigmoid(log_odds)
    return ORPOLosses(
        losses,
        lam * chosen_avg_logps.detach(),
        lam * rejected_avg_logps.detach(),
        -chosen_avg_logps.detach(),
        log_odds.detach(),
    )


class KTOLosses(NamedTuple):
    losses: torch.Tensor  # (B,) per-example loss λ_y − v(x, y)
    rewards: torch.Tensor  # (B,) implicit reward β·(log π − log π_ref), detached


def kto_reference_point(kl_sum: torch.Tensor | float, count: int | float) -> torch.Tensor:
    """KTO's reference point ẑ₀ = max(0, Σ_i (log π(y_j|x_i) − log π_ref(y_j|x_i)) / m): the mean
    log-ratio of m *mismatched* pairs (a prompt x_i with another example's completion y_j),
    an estimate of KL(π ‖ π_ref) clamped at 0 and detached (no gradient flows through it).

    Takes the sum and the count so a trainer can add them up over micro-batches and processes
    first (then every micro-batch of a step uses one ẑ₀). Reference: Ethayarajh et al. 2024
    ("KTO"), §4.1 (the estimate, the clamp, no backpropagation); TRL `KTOTrainer.kto_loss`
    (`kl = (policy_KL_logps − reference_KL_logps).mean().detach()`, gathered, `.clamp(min=0)`).
    """
    if count <= 0:
        raise ValueError("kto_reference_point: no mismatched pairs (count must be positive)")
    return (torch.as_tensor(kl_sum).detach() / count).clamp(min=0.0)


def kto_losses(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    z0: torch.Tensor | float,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOLosses:
    """KTO, per example: ℓ = λ_y − v(x, y) with r = log π(y|x) − log π_ref(y|x) and
    v = λ_D·σ(β·(r − z₀)) for a desirable y, λ_U·σ(β·(z₀ − r)) for an undesirable one.

    `z0` is the reference point (`kto_reference_point`, detached). Shapes: `policy_logps`,
    `ref_logps` (B,) summed reply log-probs, `desirable` (B,) bool → (B,). With r = z₀ every
    loss is λ_y / 2. Reference: Ethayarajh et al. 2024 ("KTO"), eq. 8 (defaults β = 0.1,
    λ_D = λ_U = 1); TRL `KTOTrainer.kto_loss` (its λ·(1 − σ(·)) is the same number).
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.shape != desirable.shape:
        raise ValueError("kto_losses: policy_logps, ref_logps and desirable must share one shape")
    r = policy_logps - ref_logps.detach()
    z0 = torch.as_tensor(z0, dtype=r.dtype, device=r.device).detach()
    weight = torch.full_like(r, desirable_weight).where(desirable, undesirable_weight)
    v = weight * torch.sigmoid(beta * torch.where(desirable, r - z0, z0 - r))
    return KTOLosses(weight - v, beta * r.detach())


class DPOLossOutput(NamedTuple):
    loss: torch.Tensor
    chosen_rewards: torch.Tensor  # (B,) β·(log π(y_w) − log π_ref(y_w)), detached
    rejected_rewards: torch.Tensor  # (B,) β·(log π(y_l) − log π_ref(y_l)), detached
    accuracy: torch.Tensor  # fraction with chosen reward > rejected reward
    margin: torch.Tensor  # mean of chosen − rejected reward


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLossOutput:
    """The batch mean of `dpo_sigmoid_losses` (cDPO with `label_smoothing` > 0) or `ipo_losses`,
    with accuracy and margin of the implicit rewards. Shapes: all four (B,) → scalar loss.
    Reference: Rafailov et al. 2023 eq. 7; Azar et al. 2023 eq. 17; TRL `DPOTrainer.dpo_loss`.
    """
    args = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if loss_type == "sigmoid":
        out = dpo_sigmoid_losses(*args, beta, label_smoothing)
    elif loss_type == "ipo":
        out = ipo_losses(*args, beta)
    else:
        raise ValueError(f"dpo_loss: unknown loss_type {loss_type!r}; use 'sigmoid' or 'ipo'")
    reward_gap = out.chosen_rewards - out.rejected_rewards
    return DPOLossOutput(
        out.losses.mean(),
        out.chosen_rewards,
        out.rejected_rewards,
        (reward_gap > 0).to(reward_gap.dtype).mean(),
        reward_gap.mean(),
    )


class SFTLossOutput(NamedTuple):
    loss: torch.Tensor
    nll: torch.Tensor  # token-mean NLL of this batch (detached); exp(nll) is its perplexity
    num_tokens: torch.Tensor  # valid tokens in this batch


def sft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    mode: LossMode = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
) -> SFTLossOutput:
    """Negative log-likelihood of `labels` under `logits`, reduced by `aggregate_loss`.

    ℓ_t = −log softmax(logits_t)[labels_t]; loss = aggregate_loss(ℓ, mask, mode, …), token mean
    by default. Shapes: `logits` (B, T, V) any float dtype (log-softmax in float32), `labels` and
    `mask` (B, T), mask True = a token to learn (response tokens); `logits[:, t]` must already
    predict `labels[:, t]` (shift before calling). Reference: InstructGPT SFT; TRL `SFTTrainer`
    completion-only loss.
    """
    mask = _bool(mask)
    per_token = -gather_logprobs(logits, labels)
    loss = aggregate_loss(per_token, mask, mode, num_tokens=num_tokens, num_seqs=num_seqs)
    return SFTLossOutput(loss, masked_mean(per_token, mask).detach(), mask.sum())
