"""`PPOConfig`: every knob of the PPO loop, with the paper each default comes from.

The PPO-Max recipe (Zheng et al. 2023, "Secrets of RLHF in Large Language Models Part I: PPO",
§5.4) is not a mode but a set of these flags; `rlhfkit/configs/ppo_max.yaml` turns them on one by
one, each commented with its source.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.core import KLEstimator, LossMode
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.models import ModelConfig
from rlhfkit.rollout import RolloutConfig


class PPODataConfig(ConfigBase):
    train: str = ""
    """Prompts for rollouts: any file `rlhfkit.data.read_prompts` reads (JSONL with a `prompt`
    field, HH transcripts, preference files, ...)."""
    format: str = "auto"
    """Reader format (auto, hh, generic, ...), as in `rlhfkit.data`."""
    on_error: Literal["stop", "skip"] = "stop"
    """Bad rows: stop with every problem listed by file and line, or skip and count them."""
    prompt_template: Literal["chat", "raw"] = "chat"
    """chat: the tokenizer's chat template, else the HH `Human:/Assistant:` format; raw: a
    one-turn prompt's text and the reply's text as they are, plus EOS (base models, plain
    continuation data, the throughput benchmarks; see `rlhfkit.data.chat`)."""
    max_prompt_length: int = Field(256, ge=1)
    """Tokens kept from the end of each prompt."""


class PPOConfig(ConfigBase):
    out_dir: str = "runs/ppo"
    """Run directory; the trained policy is written to OUT_DIR/policy (HF folder + tokenizer)
    and the critic to OUT_DIR/critic."""
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
    and re-encoded); null: the policy's token ids are scored directly."""
    reward_fn: str | None = None
    """A Python reward instead of a reward model: 'package.module:function' taking
    (prompts, responses) and returning one float per response."""
    critic: ModelConfig | None = None
    """Critic initialisation (null: from `reward_model`, as PPO-Max does; from the policy with
    a new head when there is no reward model)."""
    data: PPODataConfig = PPODataConfig()
    ptx_data: str | None = None
    """SFT/pretraining demonstrations for the ptx loss (InstructGPT PPO-ptx; null: no ptx)."""
    ptx_coef: float = Field(0.0, ge=0.0)
    """Weight γ of the ptx NLL added to the policy loss (InstructGPT used 27.8 with its scale)."""
    ptx_batch_size: int = Field(8, ge=1)
    """Demonstrations per policy optimiser step for the ptx loss."""
    eval_prompts: str | None = None
    """Held-out prompts for periodic evaluation (eval/rm_score, eval/kl_to_ref, judges)."""
    eval_size: int = Field(64, ge=1)
    """How many held-out prompts each evaluation samples."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every N iterations (and before the first and after the last; 0: only those)."""

    rollout: RolloutConfig = RolloutConfig()
    optim: OptimConfig = OptimConfig(lr=1e-5)
    """Policy optimiser (AdamW); `max_grad_norm` is the global gradient clipping of PPO-Max."""
    critic_optim: OptimConfig = OptimConfig(lr=5e-5)
    """Critic optimiser: separate, with its own (usually larger) learning rate."""
    engine: EngineConfig = EngineConfig()

    iterations: int = Field(100, ge=1)
    """PPO iterations with policy updates (one rollout batch each)."""
    critic_warmup_iters: int = Field(0, ge=0)
    """Iterations of value-only updates before policy updates begin (PPO-Max §5.4: pre-train
    the critic initialised from the reward model); they run before the `iterations`."""
    stop_after: int | None = Field(None, ge=1)
    """Stop after this many iterations in total (a deliberate early stop: the run can be
    resumed and ends where an uninterrupted run ends). null: run to the end."""
    rollout_batch_size: int = Field(64, ge=1)
    """Prompts sampled per iteration (the experience buffer; discarded after the update)."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each rollout batch."""
    mini_batch_size: int = Field(16, ge=1)
    """Sequences per optimiser step."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per mini-batch (same gradient as one pass: global token normaliser)."""
    loss_mode: LossMode = "token_mean"
    """How per-token losses are reduced (core.aggregate_loss)."""

    policy_loss: Literal["clip", "penalty"] = "clip"
    """clip: PPO-Clip (Schulman et al. 2017 eq. 7); penalty: KL-penalised surrogate (eq. 8)."""
    clip_eps: float = Field(0.2, gt=0.0)
    """PPO-Clip ε (Schulman et al. 2017: 0.2)."""
    penalty_coef: float = Field(0.01, ge=0.0)
    """PPO-Penalty β on KL(π_old ‖ π) (used when policy_loss = penalty)."""
    value_clip_eps: float | None = Field(0.2, gt=0.0)
    """Value-loss clipping around the rollout values (PPO-Max; null: unclipped)."""
    entropy_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus weight (0: off, as in InstructGPT)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount (1.0 for language: the episode is one response)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE λ (Schulman et al. 2016; TRL and MOSS-RLHF use 0.95)."""
    whiten_advantages: bool = True
    """Normalise advantages over the rollout batch (PPO-Max; CleanRL `norm_adv`)."""
    advantage_clip: float | None = Field(None, gt=0.0)
    """Clip whitened advantages to ±value (null: off)."""

    kl_coef: float = Field(0.05, ge=0.0)
    """Initial β of the per-token KL penalty in the reward (Ziegler et al. 2019)."""
    kl_estimator: KLEstimator = "k1"
    """Per-token KL estimate in the reward: k1 (log ratio), k2 or k3 (Schulman 2020)."""
    kl_control: Literal["fixed", "adaptive"] = "fixed"
    """fixed β, or the adaptive controller of Ziegler et al. 2019 (target, horizon)."""
    kl_target: float = Field(6.0, gt=0.0)
    """Adaptive controller: target KL per sequence, in nats (Ziegler et al.: 6)."""
    kl_horizon: int = Field(10000, ge=1)
    """Adaptive controller: samples over which a full correction is made (Ziegler et al.)."""

    reward_normalize: bool = False
    """Normalise scores by running mean and std (PPO-Max reward normalisation)."""
    reward_clip: float | None = Field(None, gt=0.0)
    """Clip (normalised) scores to ±value (PPO-Max reward clipping; null: off)."""
    missing_eos_penalty: float | None = Field(None, ge=0.0)
    """Subtract this from the score of responses that never ended (no EOS within the budget)."""

    on_nan: Literal["skip", "stop"] = "skip"
    """NaN/inf in scores, log-probs, values or losses: skip that batch, or stop the run keeping
    the last good checkpoint."""
    log_every: int = Field(1, ge=1)
    """Log metrics every N iterations."""
    sample_every: int = Field(10, ge=0)
    """Write sample generations to RUN/samples every N iterations (0: never)."""
    num_samples: int = Field(8, ge=1)
    """How many generations each sample file holds."""
    collapse_window: int = Field(5, ge=2)
    """Iterations that form the baseline for the pattern-collapse warnings."""

    @model_validator(mode="after")
    def _consistent(self) -> PPOConfig:
        if self.mini_batch_size > self.rollout_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) exceeds rollout_batch_size "
                f"({self.rollout_batch_size})"
            )
        if self.grad_accum_steps > self.mini_batch_size:
            raise ValueError("grad_accum_steps cannot exceed mini_batch_size")
        return self
