"""`BoNConfig`: every knob of `rlhfkit bon`, with its help text."""

from __future__ import annotations

from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.engine import EngineConfig
from rlhfkit.models import ModelConfig
from rlhfkit.rollout import RolloutConfig


class BoNConfig(ConfigBase):
    out_dir: str = "runs/bon"
    """Run directory: best.jsonl, rft.jsonl, pairs.jsonl, summary.json."""
    model: ModelConfig = ModelConfig()
    """The policy to sample from (normally the SFT model)."""
    tokenizer: str | None = None
    """Tokenizer folder or name (null: the model's own)."""
    prompts: str = ""
    """Prompts: a file in any format `rlhfkit.data.read_prompts` reads (the prompt of every
    record; e.g. the simulated world's prompts/*.jsonl)."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N prompts (null: all)."""
    max_prompt_length: int = Field(256, ge=1)
    """Keep the last N prompt tokens."""
    n: int = Field(4, ge=1)
    """Replies sampled per prompt; the best of them is kept."""
    rollout: RolloutConfig = RolloutConfig(temperature=1.0, max_new_tokens=64, batch_size=64)
    """Sampling (temperature 1: the analytic KL log n − (n − 1)/n is to the model's own
    distribution at this temperature)."""
    reward_model: str | None = None
    """A reward-model folder (`rlhfkit rm` output) sharing the policy's tokenizer; scored on the
    sampled token ids, at the last real token."""
    reward_fns: list[str] = []
    """Reward functions "package.module:function", each called as f(prompts, replies) -> floats
    with the prompts as rlhfkit dialogues (tuples of `Message`) and the replies as text (e.g.
    "rlhfkit.eval.judges:gold_judge" on the simulated world)."""
    weights: list[float] = []
    """Weight of each score in the selection score Σ w·s, in the order reward_model, then
    reward_fns (empty: all 1)."""
    rft_min_score: float | None = None
    """Write a prompt's best reply to rft.jsonl only if its selection score reaches this (null:
    every prompt; rejection-sampling fine-tuning keeps the best, Llama 2 §3.2.2 / RAFT)."""
    engine: EngineConfig = EngineConfig()

    @model_validator(mode="after")
    def _check(self) -> BoNConfig:
        k = int(self.reward_model is not None) + len(self.reward_fns)
        if k == 0:
            raise ValueError("give a reward_model and/or reward_fns to score the samples with")
        if self.weights and len(self.weights) != k:
            raise ValueError(f"weights: {len(self.weights)} given for {k} scores")
        return self
