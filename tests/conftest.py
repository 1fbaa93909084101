"""Fixtures shared by several test modules (plain helpers stay importable modules:
`helpers`, `label_helpers`, `checkpointing_helpers`, `dist_helpers`).

- `assets`: the word-level world of the online trainers (`helpers.make_word_world`), one per
  module that asks for it (test_ppo, test_pg, test_grad_checkpointing). Modules with data of
  their own (test_sft, test_rm, test_dpo, test_bon, test_distributed) define a fixture of the
  same name, which pytest uses in its place there.
- `vassets`: the same world with a GPT-2 and a Llama that vLLM's CPU kernel runs (the vLLM
  tests).
- The label app's databases and seeded apps (`db_url`, `env`, `db_env`) and `tiny_policy`, a
  local policy folder for its live chat. They import `label_helpers` when first used, so a
  checkout without the label extra (fastapi) skips those tests and runs every other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_word_world

LABEL_BACKENDS = ["sqlite", "postgresql"]  # PostgreSQL where RLHFKIT_TEST_PG_URL is set


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    return make_word_world(tmp_path_factory.mktemp("ppo_assets"))


@pytest.fixture(params=LABEL_BACKENDS)
def db_url(request, tmp_path):
    """The URL of a new, empty label database."""
    from label_helpers import fresh_url

    with fresh_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def _seeded_templates(tmp_path_factory):
    """One seeded database per backend, copied for each test: migrations and password hashing
    (Argon2, deliberately slow) run once per session instead of once per test."""
    from label_helpers import drop_templates

    made: dict = {}
    yield made
    drop_templates(made)


@pytest.fixture(params=["sqlite"])
def env(request, tmp_path_factory, _seeded_templates):
    """A seeded app on SQLite: for behaviour that does not depend on the database."""
    from label_helpers import seeded_env

    yield from seeded_env(request.param, tmp_path_factory, _seeded_templates)


@pytest.fixture(params=LABEL_BACKENDS)
def db_env(request, tmp_path_factory, _seeded_templates):
    """A seeded app on SQLite and on PostgreSQL: for what the database decides (transactions,
    constraints, queries behind statistics and export)."""
    from label_helpers import seeded_env

    yield from seeded_env(request.param, tmp_path_factory, _seeded_templates)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory) -> Path:
    """A random-init nano GPT-2 and a BPE tokenizer trained here: a local policy folder for
    live chat generation (nothing downloaded)."""
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim.tokenizer import train_tokenizer

    texts = ["Hello there, how are you today? I am fine, thank you."] * 20
    texts += ["What is the capital of France? The capital of France is Paris."] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tokenizer, seed=0)
    return save_tiny_model(model, tmp_path_factory.mktemp("policy"), tokenizer)


@pytest.fixture(scope="module")
def vassets(tmp_path_factory) -> dict[str, str]:
    """The word-level world with models vLLM's CPU kernel runs (head_dim ≥ 32): a GPT-2
    (head_dim 32) and a Llama (head_dim 64, tied embeddings); tests/test_rollout_vllm*.py."""
    import json

    import torch
    from helpers import WORDS
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    root = tmp_path_factory.mktemp("vllm_assets")
    vocab = {"<eos>": 0, "<pad>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    special = dict(eos_token_id=0, pad_token_id=1, bos_token_id=0)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_embd=64, n_layer=2, n_head=2, n_positions=64, **special)
    )
    torch.manual_seed(1)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
            tie_word_embeddings=True, **special,
        )
    )  # fmt: skip
    paths = {}
    for name, model in (("gpt2", gpt2), ("llama", llama)):
        model.save_pretrained(root / name)
        hf_tok.save_pretrained(root / name)
        paths[name] = str(root / name)
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(64):
        n = int(torch.randint(2, 6, (1,), generator=rng))
        ids = torch.randint(2, len(WORDS), (n,), generator=rng).tolist()
        lines.append(json.dumps({"prompt": " ".join(WORDS[i] for i in ids)}))
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    paths["prompts"] = str(root / "prompts.jsonl")
    return paths
