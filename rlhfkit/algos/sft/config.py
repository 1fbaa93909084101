"""`SFTConfig`: every knob of `rlhfkit sft`, with its help text."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.core import LossMode
from rlhfkit.data.config import ReadOptions
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.models import ModelConfig


class SFTDataConfig(ReadOptions):
    """The data part; `format`, `columns`, `split`, `on_error`, ... come from `ReadOptions`."""

    train: str = ""
    """Demonstrations: a file (.jsonl[.gz], .json, .csv, .parquet), a `datasets` folder or a hub
    name. Pairs and ranked lists also work (their best reply is the demonstration)."""
    validation: str | None = None
    """Held-out demonstrations; null: split `validation_fraction` off `train` (by prompt)."""
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of `train` prompts held out when `validation` is null (0: no evaluation)."""
    prompt_template: Literal["chat", "raw"] = "chat"
    """chat: the tokenizer's chat template, else the HH `Human:/Assistant:` format; raw: a
    one-turn prompt's text and the reply's text as they are, plus EOS (base models, plain
    continuation data, the throughput benchmarks; see `rlhfkit.data.chat`)."""
    max_length: int = Field(512, ge=2)
    """Longest prompt + response in tokens (longer ones are truncated, see `rlhfkit.data`)."""
    max_prompt_length: int | None = None
    """Keep at most the last N prompt tokens (null: only `max_length` applies)."""
    max_tokens: int = Field(8192, ge=2)
    """Token budget of one micro-batch: rows × longest row ≤ max_tokens (length-bucketed)."""
    packing: bool = False
    """Pack several demonstrations into each row of `max_length` tokens (block-diagonal
    attention, positions restart per demonstration: exact, no cross-talk)."""


class SFTConfig(ConfigBase):
    out_dir: str = "runs/sft"
    """Run directory (config, metrics, checkpoints; the trained model in OUT_DIR/model)."""
    model: ModelConfig = ModelConfig()
    """The causal LM to fine-tune (a local folder, or a hub name)."""
    tokenizer: str | None = None
    """Tokenizer folder or name (null: the model's own)."""
    data: SFTDataConfig = SFTDataConfig()
    optim: OptimConfig = OptimConfig(lr=2e-5)
    """AdamW and schedule (InstructGPT SFT: cosine decay, 16 epochs; here lr 2e-5 by default)."""
    engine: EngineConfig = EngineConfig()
    epochs: int = Field(1, ge=1)
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: int | None = Field(None, ge=1)
    """Optimiser steps to run (null: `epochs` passes)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per optimiser step; the gradient equals one big batch (global token count)."""
    loss_mode: LossMode = "token_mean"
    """Reduction: token_mean (every target token weighs the same), seq_mean_token_mean,
    seq_mean_token_sum (see core.aggregate_loss)."""
    log_every: int = Field(10, ge=1)
    """Log training metrics every N optimiser steps."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the validation split every N steps (0: only at the end)."""

    @model_validator(mode="after")
    def _consistent(self) -> SFTConfig:
        if self.data.packing and self.loss_mode != "token_mean":
            raise ValueError(
                "data.packing needs loss_mode=token_mean (a packed row is not one sequence)"
            )
        if self.model.name_or_path.startswith("tiny:") and not self.tokenizer:
            raise ValueError(
                "a tiny:… model needs `tokenizer` (e.g. the simulated world's tokenizer/)"
            )
        return self
