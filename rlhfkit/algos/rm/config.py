"""`RMConfig`: every knob of `rlhfkit rm`, with its help text."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhfkit.config import ConfigBase
from rlhfkit.data.config import ReadOptions
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.models import ModelConfig


class RMDataConfig(ReadOptions):
    """The data part; `format`, `columns`, `split`, `on_error`, ... come from `ReadOptions`."""

    train: str = ""
    """Comparisons: a file (.jsonl[.gz], .json, .csv, .parquet), a `datasets` folder or a hub
    name, in any format `rlhfkit.data` reads (HH, SHP, summarize, WebGPT, generic)."""
    validation: str | None = None
    """Held-out comparisons; null: split `validation_fraction` off `train` (by prompt)."""
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of `train` prompts held out when `validation` is null (0: no evaluation)."""
    ranked: bool = False
    """Read K-way ranked lists and train with the ranking loss over all K(K−1)/2 pairs, one
    forward pass per answer (false: pairs; ranked sources are then expanded to pairs)."""
    prompt_template: Literal["chat", "raw"] = "chat"
    """chat: the tokenizer's chat template, else the HH `Human:/Assistant:` format; raw: a
    one-turn prompt's text and the reply's text as they are, plus EOS (base models, plain
    continuation data, the throughput benchmarks; see `rlhfkit.data.chat`)."""
    max_length: int = Field(512, ge=2)
    """Longest prompt + reply in tokens (longer ones are truncated, see `rlhfkit.data`)."""
    max_prompt_length: int | None = None
    """Keep at most the last N prompt tokens (null: only `max_length` applies)."""
    max_tokens: int = Field(8192, ge=2)
    """Token budget of one micro-batch: rows × longest row ≤ max_tokens, length-bucketed (with
    share_prompt a comparison is one row; without, a pair is 2 rows and a list K rows)."""
    share_prompt: bool = True
    """Pack the replies to a prompt into one row after a single copy of the prompt (block
    attention mask; exact, see `data.shared_prompt`): the prompt is computed once, not once per reply."""
    max_pairs: int | None = Field(None, ge=1)
    """Also cap the items (pairs, or ranked lists) per micro-batch (null: only the token budget
    applies). With a large `max_tokens` this is a fixed batch size whose batches are still
    length-sorted (little padding)."""


class RMConfig(ConfigBase):
    out_dir: str = "runs/rm"
    """Run directory (config, metrics, checkpoints; the reward model in OUT_DIR/model)."""
    model: ModelConfig = ModelConfig()
    """Initialisation: the SFT model (InstructGPT's choice, the default in presets) or any causal
    LM; a new scalar head is added. A saved reward model continues training."""
    tokenizer: str | None = None
    """Tokenizer folder or name (null: the model's own)."""
    data: RMDataConfig = RMDataConfig()
    optim: OptimConfig = OptimConfig(lr=1e-5)
    """AdamW and schedule (InstructGPT RM: lr 9e-6, cosine, a single epoch)."""
    engine: EngineConfig = EngineConfig()
    epochs: int = Field(1, ge=1)
    """Passes over the comparisons (InstructGPT: one; RMs overfit after that)."""
    max_steps: int | None = Field(None, ge=1)
    """Optimiser steps to run (null: `epochs` passes)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per optimiser step; the gradient equals one big batch (global counts)."""
    use_margin: bool = False
    """Subtract each pair's preference-strength margin inside the sigmoid (Llama 2 §3.2.2);
    needs a `margin` in every training pair."""
    margin_scale: float = 1.0
    """Multiplier on the data's margins when `use_margin` is on."""
    beta_rm: float = Field(0.0, ge=0.0)
    """Weight of the LM imitation term β_rm·NLL(chosen | prompt) (MOSS-RLHF, Zheng et al. 2023
    §4.1; they use 1.0 with a 7B model). 0 turns it off."""
    disable_dropout: bool = False
    """Train with the model's dropout off (TRL's `RewardTrainer` default, `disable_dropout=True`);
    false keeps the dropout of the model's config. Off, the attention runs the fused SDPA
    kernel instead of the dropout path: ≈15 % less time per step on the CPU anchor workload."""
    normalize: Literal["none", "offset", "standardize"] = "offset"
    """After training, shift scores so the reference set (the training replies) has mean 0
    (Stiennon et al. 2020); standardize also scales them to unit variance."""
    normalize_samples: int = Field(1024, ge=2)
    """How many training replies form the normalisation reference set."""
    calibration_bins: int = Field(10, ge=1)
    """Confidence bins of the calibration table (P(preferred) from 0.5 to 1)."""
    log_every: int = Field(10, ge=1)
    """Log training metrics every N optimiser steps."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the validation split every N steps (0: only at the end)."""
