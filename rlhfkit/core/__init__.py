"""rlhfkit.core: the RL math of RLHF as stateless functions of tensors (imports only torch).

Masks are (B, T) bool (or 0/1) tensors with True = valid token. Log-prob math runs in float32.
Modules: `stats` (masked statistics, whitening, running moments), `logprobs` (token log-probs,
entropy), `kl` (KL estimators, reward shaping, KL controllers), `advantages` (GAE, returns,
GRPO/RLOO baselines), `losses` (loss reduction, PPO, value, reward-model, DPO and SFT losses).
"""

from rlhfkit.core.advantages import discounted_returns, gae, group_advantages, rloo_advantages
from rlhfkit.core.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLEstimator,
    best_of_n_kl,
    kl_penalty,
    last_valid_index,
    sequence_kl,
    shape_rewards,
)
from rlhfkit.core.logprobs import entropy_from_logits, gather_logprobs, perplexity
from rlhfkit.core.losses import (
    DPOLossOutput,
    LossMode,
    PairwiseLossOutput,
    PolicyLossOutput,
    PreferenceLosses,
    SFTLossOutput,
    ValueLossOutput,
    aggregate_loss,
    dpo_loss,
    dpo_sigmoid_losses,
    ipo_losses,
    pairwise_loss,
    ppo_penalty_loss,
    ppo_policy_loss,
    ranking_loss,
    sft_loss,
    simpo_losses,
    value_loss,
)
from rlhfkit.core.stats import RunningMoments, masked_mean, masked_sum, masked_var, whiten

__all__ = [
    "AdaptiveKLController",
    "DPOLossOutput",
    "FixedKLController",
    "KLEstimator",
    "LossMode",
    "PairwiseLossOutput",
    "PolicyLossOutput",
    "PreferenceLosses",
    "RunningMoments",
    "SFTLossOutput",
    "ValueLossOutput",
    "aggregate_loss",
    "best_of_n_kl",
    "discounted_returns",
    "dpo_loss",
    "dpo_sigmoid_losses",
    "entropy_from_logits",
    "gae",
    "gather_logprobs",
    "group_advantages",
    "ipo_losses",
    "kl_penalty",
    "last_valid_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "pairwise_loss",
    "perplexity",
    "ppo_penalty_loss",
    "ppo_policy_loss",
    "ranking_loss",
    "rloo_advantages",
    "sequence_kl",
    "sft_loss",
    "simpo_losses",
    "shape_rewards",
    "value_loss",
    "whiten",
]
