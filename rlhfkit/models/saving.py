"""Saving a trained policy as a plain Hugging Face folder (what every trainer writes)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_policy"]


def save_policy(model: torch.nn.Module, tokenizer: Any, path: str | Path) -> Path:
    """Write `model` (LoRA adapters merged into a copy, so the live model keeps training) and
    its tokenizer to `path`; `transformers.AutoModelForCausalLM.from_pretrained(path)` loads it."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return Path(path)
