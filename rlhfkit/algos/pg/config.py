"""`PGConfig`: the critic-free policy-gradient family (GRPO, Dr. GRPO, DAPO switches, RLOO,
REINFORCE++), one config with an `advantage:` key; `rlhfkit grpo|rloo|reinforce` pick the
estimator and the presets `grpo_sim`, `dr_grpo_sim`, `dapo_sim`, `rloo_sim`, `reinforce_sim`
set each paper's defaults. The shared settings are `rlhfkit.update.OnlineConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfkit.update import OnlineConfig, UpdateLossMode

__all__ = ["Estimator", "PGConfig"]

Estimator = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
GROUPED = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")


class PGConfig(OnlineConfig):
    out_dir: str = "runs/pg"
    """Run directory; the trained policy is written to OUT_DIR/policy (HF folder + tokenizer)."""
    advantage: Estimator = "grpo"
    """grpo: (s − mean_g)/(std_g + ε) (Shao et al. 2024); dr_grpo: s − mean_g (Liu et al. 2025);
    rloo: s − mean of the other G − 1 (Ahmadian et al. 2024); reinforce_pp: whitened discounted
    returns of the KL-shaped token rewards (Hu 2025); reinforce_pp_baseline: the same on
    s − mean_g."""
    group_size: int = Field(4, ge=1)
    """G samples per prompt (≥ 2 for the group estimators)."""
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount of the REINFORCE++ returns (1.0: the reply is one episode)."""
    track_kl: bool = False
    """Run the reference even when no KL term needs it, to log policy/kl_to_ref."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose G scores are all equal (zero advantage) and
    sample more prompts until the batch is full or `max_sampling_rounds` is reached."""
    max_sampling_rounds: int = Field(3, ge=1)
    """Rollouts per iteration at most, with dynamic sampling (the batch may then be smaller)."""
    overlong_cache: int | None = Field(None, ge=1)
    """DAPO overlong reward shaping: a penalty linear from 0 to −1 over the last this-many
    tokens of `rollout.max_new_tokens` (null: off)."""

    ppo_epochs: int = Field(1, ge=1)
    """Passes over each rollout batch (GRPO's μ; 1 = strictly on-policy, TRL's default)."""
    rollout_batch_size: int = Field(16, ge=1)
    """Prompts per iteration; the batch holds rollout_batch_size × group_size replies."""
    mini_batch_size: int = Field(64, ge=1)
    """Replies per optimiser step."""
    loss_mode: UpdateLossMode = "seq_mean_token_mean"
    """GRPO averages each reply's token losses, then the replies (Shao et al. eq. 3); Dr. GRPO:
    seq_mean_token_sum_norm; DAPO: token_mean."""
    kl_coef: float = Field(0.0, ge=0.0)
    """β of KL in the reward (RLOO, REINFORCE++: 0.05 in their presets; GRPO: 0, it uses
    kl_loss_coef instead)."""

    @model_validator(mode="after")
    def _groups(self) -> PGConfig:
        if self.advantage in GROUPED and self.group_size < 2:
            raise ValueError(f"advantage={self.advantage} needs group_size >= 2")
        if self.mini_batch_size > self.rollout_batch_size * self.group_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) exceeds the "
                f"{self.rollout_batch_size * self.group_size} replies of a rollout"
            )
        if self.overlong_cache is not None and self.overlong_cache > self.rollout.max_new_tokens:
            raise ValueError("overlong_cache cannot exceed rollout.max_new_tokens")
        return self

    @property
    def use_ref(self) -> bool:
        """Whether a reference forward runs: a KL term needs it, or `track_kl` asks."""
        return self.kl_coef > 0 or self.kl_loss_coef > 0 or self.track_kl
