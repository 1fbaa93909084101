"""`KTOConfig`: every knob of `rlhfkit kto`, with its help text."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rlhfkit.config import ConfigBase
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.models import ModelConfig

__all__ = ["KTOConfig", "KTODataConfig"]

UNPAIRED_COLUMNS = ("prompt", "messages", "system", "completion", "response", "label")


class KTODataConfig(ConfigBase):
    train: str = ""
    """Replies judged on their own: a file (.jsonl[.gz], .json, .csv, .parquet), a `datasets`
    folder or a hub name with TRL's unpaired preference rows `prompt`, `completion`, `label`
    (true = desirable; text or conversational form) — what `rlhfkit label export --format
    ratings` writes. Other columns (e.g. `meta`) are carried along and ignored."""
    columns: dict[str, str] = Field(default_factory=dict)
    """Canonical field -> the file's column name, e.g. {completion: reply, label: thumbs_up}
    (fields: prompt, messages, system, completion, response, label)."""
    validation: str | None = None
    """Held-out examples; null: split `validation_fraction` off `train` (by prompt)."""
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of `train` prompts held out when `validation` is null (0: no evaluation)."""
    on_error: Literal["stop", "skip"] = "stop"
    """Bad rows: stop (list every problem, then fail) or skip (count and warn)."""
    prompt_template: Literal["chat", "raw"] = "chat"
    """chat: the tokenizer's chat template, else the HH `Human:/Assistant:` format; raw: a
    one-turn prompt's text and the reply's text as they are, plus EOS (see `rlhfkit.data.chat`)."""
    max_length: int = Field(512, ge=2)
    """Longest prompt + reply in tokens (longer ones are truncated, see `rlhfkit.data`)."""
    max_prompt_length: int | None = None
    """Keep at most the last N prompt tokens (null: only `max_length` applies)."""
    max_tokens: int = Field(8192, ge=2)
    """Token budget of one micro-batch: rows × longest row ≤ max_tokens, length-bucketed. An
    example's row holds its prompt, its reply and the mismatched reply of its KL term."""
    share_prompt: bool = True
    """One row per example: the prompt once, then its reply and the mismatched reply (block
    attention mask, exact; see `data.shared_prompt`); false: two rows."""
    max_examples: int | None = Field(None, ge=1)
    """Also cap the examples per micro-batch (null: only the token budget applies)."""

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(UNPAIRED_COLUMNS))
        if unknown:
            raise ValueError(f"unknown field name(s) {unknown}; use {list(UNPAIRED_COLUMNS)}")
        return columns

    @property
    def max_pairs(self) -> int | None:
        """`max_examples` under the name `update.reference.PairBatching` reads (an example is
        one pair: its own reply and its mismatched one)."""
        return self.max_examples


class KTOConfig(ConfigBase):
    out_dir: str = "runs/kto"
    """Run directory (config, metrics, checkpoints, the reference log-prob cache; the trained
    policy in OUT_DIR/model)."""
    model: ModelConfig = ModelConfig()
    """The policy to train, normally the SFT model (KTO §4: π_ref = π_SFT)."""
    ref_model: str | None = None
    """Reference policy folder (null: the initial policy itself, i.e. `model` before training;
    with LoRA, the policy with its adapters disabled)."""
    tokenizer: str | None = None
    """Tokenizer folder or name (null: the model's own)."""
    data: KTODataConfig = KTODataConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6)
    """AdamW and schedule (TRL `KTOConfig` default lr 1e-6; the KTO paper used 5e-7 for 7B
    models and up to 5e-6 with β small)."""
    engine: EngineConfig = EngineConfig()
    epochs: int = Field(1, ge=1)
    """Passes over the examples."""
    max_steps: int | None = Field(None, ge=1)
    """Optimiser steps to run (null: `epochs` passes)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per optimiser step; the gradient equals one big batch (global example count,
    and one reference point z₀ for the whole step)."""
    beta: float = Field(0.1, gt=0.0)
    """β: how far the policy may move from the reference (KTO paper and TRL: 0.1)."""
    desirable_weight: float = Field(1.0, gt=0.0)
    """λ_D, the weight of desirable examples (paper and TRL: 1.0)."""
    undesirable_weight: float = Field(1.0, gt=0.0)
    """λ_U, the weight of undesirable examples (paper and TRL: 1.0)."""
    balance_weights: bool = False
    """Set λ_D = λ_U · n_U / n_D from the training counts, so λ_D·n_D / (λ_U·n_U) = 1, the low
    end of the range [1, 4/3] the KTO paper recommends for imbalanced data (§4.2, "Data
    imbalance"). Off: the weights as given, with a warning when the ratio is outside the range."""
    reference: Literal["cached", "live"] = "cached"
    """cached: the reference log-probs of every example and of its mismatched pair are computed
    once before training and stored in OUT_DIR/reference_logps.pt (a resumed run reads them
    back); live: the reference runs beside the policy every step (with LoRA and no `ref_model`:
    the policy with its adapters disabled, no second copy in memory)."""
    disable_dropout: bool = True
    """Train with the model's dropout off (TRL `KTOConfig.disable_dropout=True`): the implicit
    reward and z₀ are then deterministic functions of the weights."""
    log_every: int = Field(10, ge=1)
    """Log training metrics every N optimiser steps."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the validation split every N steps (0: only at the end)."""
