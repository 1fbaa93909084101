"""Tiny randomly initialised causal LMs built offline from a config, for CPU runs and tests.

GPT-2 (Radford et al. 2019) and Llama (Touvron et al. 2023) configs from `transformers`, in three
presets; embeddings are tied to the output head (as GPT-2 does) so most parameters sit in the
blocks. Parameter counts with a 1,024-token vocabulary (measured by `count_parameters`, the
test suite checks they stay in these bands):

| preset | d_model | layers | heads | context | gpt2 params | llama params |
|--------|---------|--------|-------|---------|-------------|--------------|
| nano   | 64      | 2      | 2     | 128     | ~0.17 M     | ~0.17 M      |
| micro  | 128     | 4      | 4     | 256     | ~0.96 M     | ~0.94 M      |
| mini   | 256     | 6      | 8     | 256     | ~5.07 M     | ~5.08 M      |

The Llama MLP width is 8/3·d rounded up to a multiple of 32 (SwiGLU keeps the GPT-2 MLP's
parameter count; Shazeer 2020). pad / bos / eos ids go into both the model config and its
generation config, so `generate` stops at eos and pads with pad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

Arch = Literal["gpt2", "llama"]
Size = Literal["nano", "micro", "mini"]

PRESETS: dict[str, dict[str, int]] = {
    "nano": {"d_model": 64, "layers": 2, "heads": 2, "context": 128},
    "micro": {"d_model": 128, "layers": 4, "heads": 4, "context": 256},
    "mini": {"d_model": 256, "layers": 6, "heads": 8, "context": 256},
}


def build_tiny_model(
    arch: Arch = "gpt2",
    size: Size = "micro",
    vocab_size: int | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM of the given architecture and preset.

    Give `tokenizer` (its length sets the vocabulary and its pad/bos/eos ids are copied into the
    configs) or a bare `vocab_size` (special ids then stay unset). Initialisation is seeded:
    the same arguments give identical weights.
    """
    if arch not in ("gpt2", "llama"):
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
    if tokenizer is None and vocab_size is None:
        raise ValueError("give a tokenizer or a vocab_size")
    vocab = len(tokenizer) if tokenizer is not None else int(vocab_size)  # type: ignore[arg-type]
    ids = {
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
    }
    p = PRESETS[size]
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=p["d_model"],
            n_layer=p["layers"],
            n_head=p["heads"],
            n_positions=p["context"],
            tie_word_embeddings=True,
            **ids,
        )
        model_cls: type[PreTrainedModel] = GPT2LMHeadModel
    else:
        intermediate = -(-(8 * p["d_model"] // 3) // 32) * 32
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=p["d_model"],
            intermediate_size=intermediate,
            num_hidden_layers=p["layers"],
            num_attention_heads=p["heads"],
            num_key_value_heads=p["heads"],
            max_position_embeddings=p["context"],
            tie_word_embeddings=True,
            **ids,
        )
        model_cls = LlamaForCausalLM
    # Seed only the init, leaving the caller's global RNG as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if v is not None})
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_tiny_model(
    model: PreTrainedModel, out_dir: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Save `model` (and `tokenizer`, if given) as a Hugging Face folder that
    `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
