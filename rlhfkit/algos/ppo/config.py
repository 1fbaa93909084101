"""`PPOConfig`: every knob of the PPO loop, with the paper each default comes from.

The PPO-Max recipe (Zheng et al. 2023, "Secrets of RLHF in Large Language Models Part I: PPO",
§5.4) is not a mode but a set of these flags; `rlhfkit/configs/ppo_max.yaml` turns them on one by
one, each commented with its source. The settings every online trainer shares (prompts, rollout,
reward, policy loss, KL) are `rlhfkit.update.OnlineConfig`; this class adds the critic's.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rlhfkit.engine import OptimConfig
from rlhfkit.models import ModelConfig
from rlhfkit.rollout import PromptDataConfig
from rlhfkit.update import OnlineConfig

PPODataConfig = PromptDataConfig  # the prompt settings every online trainer shares


class PPOConfig(OnlineConfig):
    out_dir: str = "runs/ppo"
    """Run directory; the trained policy is written to OUT_DIR/policy (HF folder + tokenizer)
    and the critic to OUT_DIR/critic."""
    critic: ModelConfig | None = None
    """Critic initialisation (null: from `reward_model`, as PPO-Max does; from the policy with
    a new head when there is no reward model; dtype and gradient checkpointing as the
    policy's)."""
    critic_optim: OptimConfig = OptimConfig(lr=5e-5)
    """Critic optimiser: separate, with its own (usually larger) learning rate."""
    critic_warmup_iters: int = Field(0, ge=0)
    """Iterations of value-only updates before policy updates begin (PPO-Max §5.4: pre-train
    the critic initialised from the reward model); they run before the `iterations`."""
    value_clip_eps: float | None = Field(0.2, gt=0.0)
    """Value-loss clipping around the rollout values (PPO-Max; null: unclipped)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount (1.0 for language: the episode is one response)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE λ (Schulman et al. 2016; TRL and MOSS-RLHF use 0.95)."""
    whiten_advantages: bool = True
    """Normalise advantages over the rollout batch (PPO-Max; CleanRL `norm_adv`)."""
    advantage_clip: float | None = Field(None, gt=0.0)
    """Clip whitened advantages to ±value (null: off)."""
    reward_normalize: bool = False
    """Normalise scores by running mean and std (PPO-Max reward normalisation)."""
    reward_clip: float | None = Field(None, gt=0.0)
    """Clip (normalised) scores to ±value (PPO-Max reward clipping; null: off)."""

    @model_validator(mode="after")
    def _batch_sizes(self) -> PPOConfig:
        if self.mini_batch_size > self.rollout_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) exceeds rollout_batch_size "
                f"({self.rollout_batch_size})"
            )
        return self
