"""`ModelConfig`: which model to load and how (dtype, LoRA, gradient checkpointing)."""

from __future__ import annotations

from typing import Literal

from rlhfkit.config import ConfigBase

DType = Literal["auto", "float32", "bfloat16", "float16"]


class LoraSettings(ConfigBase):
    r: int = 8
    """LoRA rank (Hu et al. 2021)."""
    alpha: int = 16
    """LoRA scaling numerator: the update is (alpha / r)·B·A."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (e.g. [q_proj, v_proj]); "all-linear": every linear layer but the
    output head (peft's shortcut)."""


class ModelConfig(ConfigBase):
    name_or_path: str = ""
    """A local Hugging Face folder, or a hub name (users with internet only)."""
    dtype: DType = "auto"
    """Parameter dtype. auto: bfloat16 on a GPU that supports it, float32 otherwise."""
    lora: LoraSettings | None = None
    """LoRA adapters (peft) instead of full fine-tuning; null trains every parameter."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass, in every trainer and
    whether dropout is on or off: less memory (peak RSS 0.73× on the mini models at 4 × 1,024
    tokens, docs/sft_rm.md), one extra forward per layer."""
    attn_implementation: str | None = None
    """transformers attention kernel ("sdpa", "eager", "flash_attention_2"); null: its default."""
    trust_remote_code: bool = False
    """Allow model code from the hub folder (only for architectures transformers lacks)."""
