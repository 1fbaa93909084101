"""The world's tokenizer and the tiny offline models: round trips, chat template, HF folders."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit.models.tiny import PRESETS, build_tiny_model, count_parameters, save_tiny_model
from rlhfkit.sim import train_tokenizer
from rlhfkit.sim.behaviours import behaviours_for, sample_reply
from rlhfkit.sim.world import Split, sample_task


def _world_texts(n: int = 400) -> list[str]:
    split = Split.from_seed(0)
    rng = random.Random(0)
    texts = []
    for i in range(n):
        task = sample_task(rng, split, held_out=i % 5 == 0)
        texts.extend(m.content for m in task.prompt)
        texts.extend(sample_reply(task, b, rng) for b in behaviours_for(task))
    return texts


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _world_texts()


@pytest.fixture(scope="module")
def tokenizer(texts):
    return train_tokenizer(texts, vocab_size=600)


def test_round_trip_and_vocabulary(tokenizer, texts):
    assert len(tokenizer) == 600
    for text in [*texts, "héllo wörld 你好 \t  two  spaces", ""]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # BPE learned the world's words: the average world text is far shorter in tokens than bytes.
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    assert n_tokens < 0.4 * sum(len(t.encode()) for t in texts)


def test_special_tokens_and_chat_template(tokenizer, tmp_path):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    messages = [
        {"role": "user", "content": "My name is Ann."},
        {"role": "assistant", "content": "Nice to meet you, Ann."},
        {"role": "user", "content": "What is my name?"},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|bos|><|user|>My name is Ann.<|assistant|>Nice to meet you, Ann.<|eos|>"
        "<|user|>What is my name?<|assistant|>"
    )
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "Your name is Ann."}], tokenize=False
    )
    assert full == text + "Your name is Ann.<|eos|>"
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    for token in ("<|user|>", "<|assistant|>", "<|pad|>"):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert loaded.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == text
    assert loaded(full, add_special_tokens=False)["input_ids"] == ids


# Parameter counts with this test's 600-token vocabulary: embeddings tied, so the count is
# vocab·d + the blocks. Bands state the presets' sizes ("a few M parameters at most").
BANDS = {"nano": (0.1e6, 0.2e6), "micro": (0.8e6, 1.0e6), "mini": (4.5e6, 5.2e6)}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_tiny_models_presets_and_hf_folder(arch, tokenizer, tmp_path):
    for size, (lo, hi) in BANDS.items():
        n = count_parameters(build_tiny_model(arch, size, tokenizer=tokenizer, seed=0))
        assert lo < n < hi, (arch, size, n)
    model = build_tiny_model(arch, "nano", tokenizer=tokenizer, seed=0)
    same = build_tiny_model(arch, "nano", tokenizer=tokenizer, seed=0)
    other = build_tiny_model(arch, "nano", tokenizer=tokenizer, seed=1)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True)
    )
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters(), strict=True)
    )
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    for cfg in (model.config, model.generation_config):
        assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 1, 2)

    save_tiny_model(model, tmp_path, tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    loaded_tok = AutoTokenizer.from_pretrained(str(tmp_path))
    batch = loaded_tok(["What is 2 plus 3?", "Hi"], return_tensors="pt", padding=True)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    context = (
        loaded.config.max_position_embeddings if arch == "llama" else loaded.config.n_positions
    )
    assert context == PRESETS["nano"]["context"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model("bert", "nano", vocab_size=100)
    with pytest.raises(ValueError, match="size"):
        build_tiny_model("gpt2", "huge", vocab_size=100)
    with pytest.raises(ValueError, match="tokenizer or a vocab_size"):
        build_tiny_model("gpt2", "nano")
