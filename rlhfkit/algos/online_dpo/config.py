"""`OnlineDPOConfig`: online and iterative DPO (`rlhfkit online-dpo`). The shared online
settings (policy, reward, prompts, rollout, evaluation, checkpoints) are
`rlhfkit.update.OnlineConfig`; the PPO-only keys there (clip, value, KL-in-reward) are unused.
The LLM judge that can label the pairs is `rollout.JudgeConfig`, the one `rlhfkit eval run`
fills from its `--judge-*` options."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfkit.rollout import JudgeConfig
from rlhfkit.update import OnlineConfig

__all__ = ["OnlineDPOConfig"]


class OnlineDPOConfig(OnlineConfig):
    out_dir: str = "runs/online_dpo"
    """Run directory; the trained policy is written to OUT_DIR/policy (HF folder + tokenizer)."""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid: DPO (Rafailov et al. 2023 eq. 7), as Guo et al. 2024; ipo: IPO (Azar et al.
    2023 eq. 17) on token-mean log-probs, as `rlhfkit dpo`."""
    beta: float = Field(0.1, gt=0.0)
    """β of DPO / IPO's τ (Guo et al. 2024 and TRL `OnlineDPOConfig`: 0.1)."""
    num_samples: int = Field(2, ge=2)
    """K replies sampled per prompt; the best and the worst by the reward form the pair (2:
    Guo et al. 2024; more: the best-vs-worst pairs of Xiong et al. 2024 / OpenRLHF)."""
    rollout_batch_size: int = Field(16, ge=1)
    """Prompts sampled and labelled per iteration (at most this many pairs: ties are dropped)."""
    mini_batch_size: int = Field(16, ge=1)
    """Pairs per optimiser step. Equal to rollout_batch_size with ppo_epochs 1: one step per
    fresh on-policy batch (online DPO, Guo et al. 2024); a larger rollout_batch_size makes the
    iterative variant, which relabels a fresh on-policy set every
    ppo_epochs × rollout_batch_size / mini_batch_size steps (OpenRLHF's iterative DPO)."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each labelled set before the next is sampled (1: strictly on-policy)."""
    label: Literal["reward", "judge"] = "reward"
    """Who picks the chosen reply: the reward (`reward_model` / `reward_fn` / `rewards`), or the
    pairwise LLM judge `judge`, asked in both orders; a pair it calls a tie or whose verdict
    changes with the order is dropped (`pairs/ties_dropped`, `label/order_disagreement`). With
    the judge a reward is optional: when one is given its scores are still logged."""
    judge: JudgeConfig = JudgeConfig()
    """The LLM judge for `label: judge`: `judge.model` (a local causal LM folder) or `judge.url`
    + `judge.api_model` (an OpenAI-compatible endpoint), `judge.template` (as `rlhfkit eval
    run --judge-*`)."""
    share_prompt: bool = True
    """Both replies of a pair in one row after a single copy of the prompt (as `rlhfkit dpo`)."""

    @model_validator(mode="after")
    def _sizes(self) -> OnlineDPOConfig:
        if self.mini_batch_size > self.rollout_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) exceeds the at most "
                f"{self.rollout_batch_size} pairs of a rollout (rollout_batch_size)"
            )
        if self.label == "reward" and self.judge.given:
            raise ValueError("judge.model / judge.url are set but label=reward: add label=judge")
        if self.label == "judge" and not self.judge.given:
            raise ValueError(
                "label=judge needs judge.model (a local causal LM folder) or judge.url + "
                "judge.api_model (an OpenAI-compatible endpoint)"
            )
        return self
