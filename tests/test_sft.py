"""SFT trainer: learning signal, exact gradient accumulation, resume ≡ uninterrupted, packing,
evaluation against a naive loop, clear errors for bad rows (presets: tests/test_presets.py).

Everything runs on a nano GPT-2 (≈0.1 M parameters) and a 300-token tokenizer, in seconds.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from helpers import build_config
from safetensors.torch import load_file

from rlhfkit.algos.sft import SFTConfig, packed_attention_mask, train
from rlhfkit.algos.sft.trainer import _batch, evaluate, micro_batch_loss
from rlhfkit.data import DataError, collate_sft, encode_sft, read_sft
from rlhfkit.engine import Engine, accumulate
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]


def _rows() -> list[dict]:
    """A learnable toy: the reply repeats the prompt's word (2 or 3 times)."""
    rows = []
    for i, w in enumerate(WORDS * 3):
        n = 2 + i % 2
        rows.append({"prompt": f"say {w} {n} times", "response": " ".join([w] * n) + "."})
    return rows


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    rows = _rows()
    texts = [r["prompt"] + " " + r["response"] for r in rows]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    base = save_tiny_model(model, root / "base", tok)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, base


def _cfg(root: Path, base: Path, out: str, **kw) -> SFTConfig:
    defaults = {
        "out_dir": str(root / out),
        "model": {"name_or_path": str(base)},
        "data": {"train": str(root / "train.jsonl"), "max_length": 32, "max_tokens": 160},
        "optim": {"lr": 3e-3, "max_grad_norm": 1.0},
        "log_every": 1,
        "engine": {"seed": 0, "device": "cpu", "threads": 1},
    }
    return build_config(SFTConfig, defaults, **kw)


def test_loss_falls_and_every_parameter_moves(assets):
    root, base = assets
    cfg = _cfg(root, base, "learn", epochs=20, data={"validation_fraction": 0.25})
    result = train(cfg)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    losses = [r["loss/sft"] for r in rows if "loss/sft" in r]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < 0.3 * sum(losses[:3]) / 3, losses
    assert result.metrics["eval/perplexity"] == pytest.approx(math.exp(result.metrics["eval/loss"]))
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(result.model_dir / "model.safetensors"))
    for name, tensor in before.items():
        assert not torch.equal(tensor, after[name]), f"{name} did not change"
    assert (result.model_dir / "tokenizer_config.json").is_file()


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_accumulation_of_micro_batches_equals_one_big_batch(assets, mode):
    root, base = assets
    cfg = _cfg(root, base, "unused", loss_mode=mode)
    tok = load_tokenizer(base)
    items = encode_sft(tok, read_sft(root / "train.jsonl").records[:8], 32)
    n_tokens = sum(max(0, it.length - max(it.prompt_length, 1)) for it in items)
    grads = []
    for split in ([items], [items[:3], items[3:5], items[5:]]):
        model = load_policy(ModelConfig(name_or_path=str(base)))
        batches = [collate_sft(part, tok.pad_token_id) for part in split]
        losses = [
            partial(micro_batch_loss, model, b, n_tokens, len(items), 1, cfg) for b in batches
        ]
        accumulate(Accelerator(cpu=True), model, losses)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_killed_and_resumed_run_ends_equal_to_uninterrupted(assets, monkeypatch):
    root, base = assets
    common = {
        "max_steps": 6,
        "engine": {"seed": 3, "device": "cpu", "threads": 1, "checkpoint_every": 2},
    }
    full = train(_cfg(root, base, "full", **common))

    class Killed(Exception):
        pass

    save = Engine.save

    def save_then_die(self, step, state):
        path = save(self, step, state)
        if step == 4:
            raise Killed
        return path

    monkeypatch.setattr(Engine, "save", save_then_die)
    with pytest.raises(Killed):
        train(_cfg(root, base, "resumed", **common))
    monkeypatch.setattr(Engine, "save", save)
    resumed = train(_cfg(root, base, "resumed", **common))
    a = load_file(str(full.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=0, rtol=0)


def test_packed_evaluation_equals_unpacked(assets):
    root, base = assets
    tok = load_tokenizer(base)
    items = encode_sft(tok, read_sft(root / "train.jsonl").records, 32)
    model = load_policy(ModelConfig(name_or_path=str(base))).eval()
    engine = Engine(_cfg(root, base, "pack").engine, root / "pack", _cfg(root, base, "pack"))
    results = []
    for packing in (False, True):
        cfg = _cfg(root, base, "pack", data={"packing": packing, "max_tokens": 64})
        results.append(evaluate(model, engine, items, cfg, tok.pad_token_id, torch.float32))
    assert results[0]["eval/tokens"] == results[1]["eval/tokens"]
    assert results[1]["eval/loss"] == pytest.approx(results[0]["eval/loss"], rel=1e-5)
    engine.close()


def test_evaluation_matches_a_naive_per_example_loop(assets):
    root, base = assets
    tok = load_tokenizer(base)
    items = encode_sft(tok, read_sft(root / "train.jsonl").records[:6], 32)
    model = load_policy(ModelConfig(name_or_path=str(base))).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for it in items:  # NLL of every response token, each example alone, from the definition
            ids = torch.tensor([it.input_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            for t in range(max(it.prompt_length, 1), it.length):
                total -= float(logp[t - 1, it.input_ids[t]])
                count += 1
    cfg = _cfg(root, base, "naive")
    engine = Engine(cfg.engine, root / "naive", cfg)
    got = evaluate(model, engine, items, cfg, tok.pad_token_id, torch.float32)
    engine.close()
    assert got["eval/tokens"] == count
    assert got["eval/loss"] == pytest.approx(total / count, rel=1e-5)


def test_packed_attention_mask_is_block_diagonal_causal():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    allowed = packed_attention_mask(seg, torch.float32)[0, 0] == 0
    for i in range(6):
        for j in range(6):
            expected = (seg[0, i] == seg[0, j] and j <= i and seg[0, i] > 0) or i == j
            assert bool(allowed[i, j]) == bool(expected), (i, j)


def test_packed_batch_computes_the_unpacked_loss(assets):
    root, base = assets
    tok = load_tokenizer(base)
    items = encode_sft(tok, read_sft(root / "train.jsonl").records[:5], 32)
    model = load_policy(ModelConfig(name_or_path=str(base))).eval()
    n_tokens = sum(max(0, it.length - max(it.prompt_length, 1)) for it in items)
    losses = []
    for packing in (False, True):
        cfg = _cfg(root, base, "x", data={"packing": packing})
        batch = _batch(items, cfg, tok.pad_token_id, torch.float32)
        model.zero_grad()
        thunk = partial(micro_batch_loss, model, batch, n_tokens, 5, 1, cfg)
        losses.append(accumulate(Accelerator(cpu=True), model, [thunk])["loss"])
    assert losses[1] == pytest.approx(losses[0], abs=1e-6, rel=1e-5)


def test_bad_row_is_reported_with_file_and_line(assets, tmp_path):
    root, base = assets
    bad = tmp_path / "bad.jsonl"
    rows = _rows()[:3]
    lines = [json.dumps(r) for r in rows]
    lines.insert(1, json.dumps({"prompt": "hello"}))  # no response: line 2
    bad.write_text("\n".join(lines) + "\n")
    cfg = _cfg(root, base, "bad", data={"train": str(bad)})
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        train(cfg)
