"""Plain helpers shared by several test modules (the fixtures built on them are in conftest.py).

- `build_config`: a trainer config from a dict of defaults and dotted overrides, through the same
  `rlhfkit.config.load_config` parsing and validation as `rlhfkit <command> key=value`.
- The word-level world of the online-trainer tests: 14 words w0..w13, a toy reward (the fraction
  of reply words equal to `TARGET`) and `make_word_world`, which writes a tiny GPT-2 policy, a far
  reference and 64 prompts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from rlhfkit.config import load_config

C = TypeVar("C", bound=BaseModel)


def _dotted(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"data": {"max_length": 8}} → {"data.max_length": 8}; other values kept as they are."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def build_config(cls: type[C], defaults: Mapping[str, Any], **overrides: Any) -> C:
    """`cls` from `defaults`, then each override as the command line's `key=value`.

    A key may be dotted (`**{"optim.lr": 1e-3}`) or a section given as a dict
    (`data={"max_length": 8}`), which overrides only the keys it names. Values are written as
    JSON (a YAML subset) and parsed back by `rlhfkit.config.parse_override`, so a test config is
    built the way a user's is, with the same errors.
    """
    texts = [f"{key}={json.dumps(value, default=str)}" for key, value in _dotted(overrides).items()]
    return load_config(cls, overrides=texts, defaults=dict(defaults))


WORDS = [f"w{i}" for i in range(14)]
TARGET = "w7"  # the toy reward: fraction of response words equal to TARGET


def target_fraction(prompts: list[str], responses: list[str]) -> list[float]:
    out = []
    for r in responses:
        words = r.split()
        out.append(sum(w == TARGET for w in words) / len(words) if words else 0.0)
    return out


def make_word_world(root: Path) -> dict[str, str]:
    """A word-level tokenizer, a policy (init std 0.02) and a reference far from it (0.3, so
    KL ≫ 0), each a 2-layer GPT-2 folder, and 64 prompts of 2-5 words. Returns their paths."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_tok = word_tokenizer()
    vocab = hf_tok.get_vocab()
    paths = {}
    for name, seed, init in (("policy", 0, 0.02), ("ref", 1, 0.3)):
        torch.manual_seed(seed)
        cfg = GPT2Config(
            vocab_size=len(vocab),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=64,
            eos_token_id=0,
            pad_token_id=1,
            bos_token_id=0,
            initializer_range=init,
        )
        GPT2LMHeadModel(cfg).save_pretrained(root / name)
        hf_tok.save_pretrained(root / name)
        paths[name] = str(root / name)
    paths["prompts"] = write_word_prompts(root)
    return paths


def word_tokenizer():
    """The word-level tokenizer of `WORDS` (<eos> 0, <pad> 1, then the words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "<pad>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def write_word_prompts(root: Path) -> str:
    """64 seeded prompts of 2-5 words in root/prompts.jsonl; returns the path."""
    import torch

    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(64):
        n = int(torch.randint(2, 6, (1,), generator=rng))
        ids = torch.randint(2, len(WORDS), (n,), generator=rng).tolist()
        lines.append(json.dumps({"prompt": " ".join(WORDS[i] for i in ids)}))
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return str(root / "prompts.jsonl")


def assert_compiled_equals_eager(run: Any, loss_key: str) -> None:
    """`run(compile: bool)` trains two steps and returns its metric lines with `loss_key`.
    Step 1's loss and gradient norm (same weights) and step 2's loss (after one update),
    compiled against eager, are equal within float32 reordering (inductor fuses and reorders a
    block's arithmetic): relative 1e-5 on step 1, 1e-4 on step 2; the compiled run compiled."""
    import pytest

    eager, compiled = run(False), run(True)
    assert len(eager) == len(compiled) == 2
    assert "perf/compile_s" not in eager[0]
    assert compiled[0]["perf/compile_s"] > 0 and compiled[0]["perf/compiled_graphs"] >= 1
    norm = next(k for k in eager[0] if k.endswith("grad_norm"))
    for key in (loss_key, norm):
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-5, abs=0), key
    assert compiled[1][loss_key] == pytest.approx(eager[1][loss_key], rel=1e-4, abs=0)
    assert compiled[1][loss_key] != eager[0][loss_key]  # the update happened
