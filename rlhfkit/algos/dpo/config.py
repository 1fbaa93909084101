"""`DPOConfig`: every knob of `rlhfkit dpo`, with its help text."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhfkit.config import ConfigBase
from rlhfkit.engine import EngineConfig, OptimConfig
from rlhfkit.models import ModelConfig


class DPODataConfig(ConfigBase):
    train: str = ""
    """Comparisons: a file (.jsonl[.gz], .json, .csv, .parquet), a `datasets` folder or a hub
    name, in any format the reward-model trainer reads (pairs, HH transcripts, SHP, summarize,
    WebGPT, generic); ranked lists of K replies become their K(K−1)/2 pairs. Margins are read
    and ignored (no DPO variant here uses them)."""
    validation: str | None = None
    """Held-out comparisons; null: split `validation_fraction` off `train` (by prompt)."""
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of `train` prompts held out when `validation` is null (0: no evaluation)."""
    format: Literal["auto", "hh", "shp", "summarize", "summarize_axis", "webgpt", "generic"] = (
        "auto"
    )
    """Row format of the source (auto: sniffed from the first row)."""
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
    """Token budget of one micro-batch: rows × longest row ≤ max_tokens, length-bucketed (with
    share_prompt a pair is one row; without, two rows)."""
    share_prompt: bool = True
    """Pack both replies of a pair into one row after a single copy of the prompt (block
    attention mask; exact, see `data.shared_prompt`). Needs a model that takes 4-D attention
    masks (GPT-2, Llama, Qwen2, … with sdpa or eager attention)."""
    max_pairs: int | None = Field(None, ge=1)
    """Also cap the pairs per micro-batch (null: only the token budget applies)."""


class DPOConfig(ConfigBase):
    out_dir: str = "runs/dpo"
    """Run directory (config, metrics, checkpoints, the reference log-prob cache; the trained
    policy in OUT_DIR/model)."""
    model: ModelConfig = ModelConfig()
    """The policy to train, normally the SFT model (DPO §4: π_ref = π_SFT)."""
    ref_model: str | None = None
    """Reference policy folder (null: the initial policy itself, i.e. `model` before training;
    with LoRA, the policy with its adapters disabled)."""
    tokenizer: str | None = None
    """Tokenizer folder or name (null: the model's own)."""
    data: DPODataConfig = DPODataConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6)
    """AdamW and schedule (TRL `DPOConfig` default lr 1e-6; the DPO paper used 1e-6 with RMSprop
    and 150 warm-up steps)."""
    engine: EngineConfig = EngineConfig()
    epochs: int = Field(1, ge=1)
    """Passes over the comparisons."""
    max_steps: int | None = Field(None, ge=1)
    """Optimiser steps to run (null: `epochs` passes)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches per optimiser step; the gradient equals one big batch (global pair count)."""
    loss_type: Literal["sigmoid", "ipo", "simpo", "orpo"] = "sigmoid"
    """sigmoid: DPO (Rafailov et al. 2023), conservative DPO with `label_smoothing` > 0
    (Mitchell 2023); ipo: IPO (Azar et al. 2023) on token-mean log-probs, as TRL; simpo: SimPO
    (Meng et al. 2024), reference-free, token-mean log-probs and target margin `simpo_gamma`;
    orpo: ORPO (Hong et al. 2024), the chosen reply's NLL plus β times the odds-ratio term,
    reference-free (no reference is loaded or cached)."""
    beta: float = Field(0.1, gt=0.0)
    """β: the KL strength of DPO / IPO's τ (DPO paper and TRL: 0.1), SimPO's reward scale
    (SimPO paper: 2.0–2.5) or ORPO's λ, the weight of the odds-ratio term (ORPO paper and TRL
    `ORPOConfig.beta`: 0.1)."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    """cDPO: the assumed probability that a label is flipped (sigmoid loss only; 0 = DPO)."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin γ (TRL `CPOConfig.simpo_gamma` default 0.5)."""
    reference: Literal["cached", "live"] = "cached"
    """cached: the reference log-probs of every pair are computed once before training and
    stored in OUT_DIR/reference_logps.pt (a resumed run reads them back); live: the reference
    runs beside the policy every step (with LoRA and no `ref_model`: the policy with its
    adapters disabled, no second copy in memory)."""
    disable_dropout: bool = True
    """Train with the model's dropout off (TRL `DPOConfig.disable_dropout=True`): the implicit
    reward is then a deterministic function of the weights, and the reference log-probs are
    computed in the same mode."""
    log_every: int = Field(10, ge=1)
    """Log training metrics every N optimiser steps."""
    eval_every: int = Field(0, ge=0)
    """Evaluate on the validation split every N steps (0: only at the end)."""

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing (cDPO) applies to loss_type=sigmoid only")
        return self
