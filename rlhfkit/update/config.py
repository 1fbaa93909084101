"""`OnlineConfig`: the settings every online trainer shares (PPO and the critic-free family add
their own). Flat keys, so a preset reads as one list of switches with their sources."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.core import KLEstimator
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.env.base import EpisodeConfig
from rlhfkit.models import ModelConfig
from rlhfkit.rollout import PromptDataConfig, RewardSpec, RolloutConfig

__all__ = ["OnlineConfig", "UpdateLossMode"]

# core.aggregate_loss's modes, plus Dr. GRPO's constant normaliser (Σ tokens / (S · L_max)).
UpdateLossMode = Literal[
    "token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"
]


class OnlineConfig(ConfigBase):
    out_dir: str = "runs/online"
    """Run directory; the trained policy is written to OUT_DIR/policy (HF folder + tokenizer)."""
    policy: ModelConfig = ModelConfig()
    """The policy to train (the SFT model); `policy.lora` trains LoRA adapters only."""
    ref_policy: str | None = None
    """Reference model folder (null: the initial policy; with LoRA, the policy with its
    adapters disabled, no second copy in memory)."""
    tokenizer: str | None = None
    """Tokenizer folder (null: the policy's own)."""
    reward_model: str = ""
    """Reward model folder (a `rlhfkit rm` output or any *ForSequenceClassification folder)."""
    reward_tokenizer: str | None = None
    """The reward model's own tokenizer when it differs from the policy's (texts are decoded
    and re-encoded in the RM's template, + EOS); null: the policy's token ids are scored."""
    reward_fn: str | None = None
    """A Python reward instead of a reward model: 'package.module:function' taking
    (prompts, responses[, records]) and returning one float per response."""
    rewards: list[RewardSpec] = []
    """Several weighted rewards (reward models and/or functions), each logged as
    `reward/<name>`; the trainer optimises the weighted sum. Overrides the two shortcuts above."""
    data: PromptDataConfig = PromptDataConfig()
    eval_prompts: str | None = None
    """Held-out prompts for periodic evaluation (eval/rm_score, eval/kl_to_ref, judges)."""
    eval_size: int = Field(64, ge=1)
    """How many held-out prompts each evaluation samples."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every N iterations (and before the first and after the last; 0: only those)."""
    ptx_data: str | None = None
    """SFT/pretraining demonstrations for the ptx loss (InstructGPT PPO-ptx; null: no ptx)."""
    ptx_coef: float = Field(0.0, ge=0.0)
    """Weight γ of the ptx NLL added to the policy loss (InstructGPT used 27.8 with its scale)."""
    ptx_batch_size: int = Field(8, ge=1)
    """Demonstrations per policy optimiser step for the ptx loss."""

    rollout: RolloutConfig = RolloutConfig()
    env: str | None = None
    """A multi-turn environment, 'package.module:Factory' (called with `env_args` once per
    episode; docs/env.md): the policy talks with it over several turns, it rewards the
    episodes, and only the policy's own tokens carry a loss. null: one reply per prompt."""
    env_args: dict[str, Any] = {}
    """Keyword arguments of the environment factory."""
    episode: EpisodeConfig = EpisodeConfig()
    """The multi-turn driver's limits (turn cap, token budget, error rate; with `env`)."""
    optim: OptimConfig = OptimConfig(lr=1e-5)
    """Policy optimiser (AdamW); `max_grad_norm` is the global gradient clipping (PPO-Max)."""
    engine: EngineConfig = EngineConfig()

    iterations: int = Field(100, ge=1)
    """Iterations with policy updates (one rollout batch each)."""
    stop_after: int | None = Field(None, ge=1)
    """Stop after this many iterations in total (a deliberate early stop: the run can be
    resumed and ends where an uninterrupted run ends). null: run to the end."""
    rollout_batch_size: int = Field(64, ge=1)
    """Prompts sampled per iteration (times `group_size` samples each where there are groups)."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each rollout batch (GRPO's μ)."""
    mini_batch_size: int = Field(16, ge=1)
    """Sequences per optimiser step."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per mini-batch (same gradient as one pass: global token normaliser)."""
    loss_mode: UpdateLossMode = "token_mean"
    """How per-token losses are reduced (core.aggregate_loss; seq_mean_token_sum_norm: Σ of the
    step's token losses / (sequences · rollout.max_new_tokens), Dr. GRPO)."""

    policy_loss: Literal["clip", "penalty", "pg"] = "clip"
    """clip: PPO-Clip (Schulman et al. 2017 eq. 7); penalty: KL-penalised surrogate (eq. 8);
    pg: the plain REINFORCE-style surrogate −A·π/π_old (no clip)."""
    clip_eps: float = Field(0.2, gt=0.0)
    """PPO-Clip ε (the lower one, 1 − ε, when clip_eps_high is set; Schulman et al. 2017: 0.2)."""
    clip_eps_high: float | None = Field(None, gt=0.0)
    """Upper clip 1 + ε_high (DAPO "clip-higher", Yu et al. 2025: 0.28; null: clip_eps)."""
    clip_ratio_c: float | None = Field(None, gt=1.0)
    """Dual clip (Ye et al. 2020): for A < 0 the loss is at most −c·A (3.0 there; null: off)."""
    penalty_coef: float = Field(0.01, ge=0.0)
    """PPO-Penalty β on KL(π_old ‖ π) (used when policy_loss = penalty)."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (0: off, as in InstructGPT)."""
    kl_loss_coef: float = Field(0.0, ge=0.0)
    """β of KL(π ‖ π_ref) added to the policy *loss* (GRPO, Shao et al. 2024; 0: off)."""
    kl_loss_estimator: KLEstimator = "k3"
    """Estimator of the KL loss term (GRPO uses k3)."""

    kl_coef: float = Field(0.05, ge=0.0)
    """Initial β of the KL penalty in the *reward* (Ziegler et al. 2019): per token for PPO and
    REINFORCE++, Σ over the reply subtracted from the score for GRPO / RLOO."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimate in the reward: k1 (log ratio), k2 or k3 (Schulman 2020)."""
    kl_control: Literal["fixed", "adaptive"] = "fixed"
    """fixed β, or the adaptive controller of Ziegler et al. 2019 (target, horizon)."""
    kl_target: float = Field(6.0, gt=0.0)
    """Adaptive controller: target KL per sequence, in nats (Ziegler et al.: 6)."""
    kl_horizon: int = Field(10000, ge=1)
    """Adaptive controller: samples over which a full correction is made (Ziegler et al.)."""
    missing_eos_penalty: float | None = Field(None, ge=0.0)
    """Subtract this from the score of responses that never ended (no EOS within the budget)."""

    is_correction: Literal[
        "auto", "off", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"
    ] = "auto"
    """Importance-sampling correction of the policy loss for tokens sampled by another engine
    (core.importance_weights; Yao et al. 2025): token- or sequence-level ratio π_old/μ,
    truncated at is_clip_max or masked outside [is_clip_min, is_clip_max]. auto: off with the
    local sampler (its log-probs are the trainer's), token_truncate with vLLM."""
    is_clip_min: float = Field(0.0, ge=0.0)
    """Lower bound of the kept ratios in the mask modes (0: no lower bound, as TRL)."""
    is_clip_max: float = Field(2.0, gt=0.0)
    """Cap of the ratio (truncate) or upper bound of the kept ratios (mask); Yao et al. 2025: 2."""

    on_nan: Literal["skip", "stop"] = "skip"
    """NaN/inf in scores, log-probs, values or losses: skip that batch, or stop the run keeping
    the last good checkpoint (one NaN score drops the whole batch; the console says so)."""
    on_reward_error: Literal["stop", "skip"] = "stop"
    """A reward function that raises or returns anything but one number per reply: stop the run
    with one line naming it and the iteration (the last checkpoint is kept), or skip that batch
    and count it (`reward/failed_batches`; e.g. a flaky remote scorer)."""
    log_every: int = Field(1, ge=1)
    """Log metrics every N iterations."""
    sample_every: int = Field(10, ge=0)
    """Write sample generations to RUN/samples every N iterations (0: never)."""
    num_samples: int = Field(8, ge=1)
    """How many generations each sample file holds."""
    collapse_window: int = Field(5, ge=2)
    """Iterations that form the baseline for the pattern-collapse warnings."""

    @model_validator(mode="after")
    def _consistent(self) -> OnlineConfig:
        if self.grad_accum_steps > self.mini_batch_size:
            raise ValueError("grad_accum_steps cannot exceed mini_batch_size")
        return self
