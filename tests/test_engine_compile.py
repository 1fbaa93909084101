"""`engine.compile`: which modules compile, generation stays eager, the one-line fallback when the
platform cannot compile (simulated: a C++ compiler that does not exist), and one SFT update
compiled equal to eager (slow: compilation on a CPU takes minutes)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import rlhfkit.engine.compile as comp
from rlhfkit.engine import Engine, EngineConfig
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.models import ScalarModel


def _gpt2(layers: int = 3) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=40, n_embd=32, n_layer=layers, n_head=2, n_positions=32)
    return GPT2LMHeadModel(cfg).eval()


def test_decoder_blocks_are_the_repeated_layers():
    gpt2 = _gpt2()
    assert comp.decoder_blocks(gpt2) is gpt2.transformer.h
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=40,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    )
    assert comp.decoder_blocks(llama) is llama.model.layers
    rm = GPT2ForSequenceClassification(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2))
    assert comp.decoder_blocks(ScalarModel(rm)) is rm.transformer.h
    assert comp.decoder_blocks(torch.nn.Linear(2, 2)) is None


def test_blocks_run_compiled_without_a_cache_and_eager_with_one(monkeypatch):
    calls = []

    def fake_compiled(block, *args, **kwargs):  # stands for torch.compile's function
        calls.append(block)
        return type(block).forward(block, *args, **kwargs)

    monkeypatch.setattr(comp, "_compiled_forward", lambda cls: fake_compiled)
    model = _gpt2(layers=2)
    ids = torch.randint(0, 40, (2, 5))
    want = model(input_ids=ids, use_cache=False).logits
    assert comp.compile_blocks(model, print) == 2
    got = model(input_ids=ids, use_cache=False).logits
    assert len(calls) == 2 and torch.equal(got, want)
    model(input_ids=ids, cache=DynamicCache(), use_cache=True)  # generation
    assert len(calls) == 2


def test_a_block_that_fails_to_compile_runs_eager_after_one_line(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    def failing(block, *args, **kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("no compiler"), None)

    monkeypatch.setattr(comp, "_compiled_forward", lambda cls: failing)
    model = _gpt2(layers=2)
    ids = torch.randint(0, 40, (2, 5))
    want = model(input_ids=ids, use_cache=False).logits
    lines: list[str] = []
    comp.compile_blocks(model, lines.append)
    assert torch.equal(model(input_ids=ids, use_cache=False).logits, want)
    assert torch.equal(model(input_ids=ids, use_cache=False).logits, want)
    assert len(lines) == 2  # one per block, once: the second call goes straight to eager
    assert all("GPT2Block did not compile" in x and "runs eager" in x for x in lines)


def test_no_cxx_compiler_means_one_line_and_eager(tmp_path, monkeypatch, capsys):
    """The platform check compiles a tiny function for real with a C++ compiler that is not
    there: one line, no block compiled, no metrics added."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    cfg = EngineConfig(device="cpu", compile=True, threads=1)
    engine = Engine(cfg, tmp_path / "run", cfg)
    model = _gpt2(layers=2)
    engine.compile(model)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "engine.compile" in x]
    assert len(lines) == 1 and "cannot run here" in lines[0] and "running eager" in lines[0]
    assert all("forward" not in block.__dict__ for block in model.transformer.h)
    engine.compile(_gpt2(layers=2))  # checked once per run: no second line
    assert "engine.compile" not in capsys.readouterr().err
    engine.log({"loss": 1.0}, 1)
    engine.close()
    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "perf/compile_s" not in row


@pytest.mark.slow  # compiles a GPT-2 block forward + backward: minutes on a CPU
def test_one_sft_update_compiled_equals_eager(tmp_path):
    """Step 1's loss and gradient norm (same weights) and step 2's loss (after one update) of
    the SFT trainer, compiled against eager: equal within float32 reordering (inductor fuses
    and reorders the block's arithmetic): relative 1e-5 on step 1, 1e-4 on step 2."""
    from rlhfkit.algos.sft import SFTConfig, train
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim.tokenizer import train_tokenizer

    rows = [{"prompt": f"say {w}", "response": f"{w} {w}."} for w in ["cat", "dog", "sun"] * 4]
    texts = [r["prompt"] + " " + r["response"] for r in rows]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0
    base = save_tiny_model(model, tmp_path / "base", tok)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(compile_: bool) -> list[dict]:
        cfg = SFTConfig.model_validate(
            {
                "out_dir": str(tmp_path / f"out{compile_}"),
                "model": {"name_or_path": str(base)},
                "data": {"train": str(tmp_path / "train.jsonl"), "max_length": 32},
                "optim": {"lr": 3e-3},
                "max_steps": 2,
                "log_every": 1,
                "engine": {"seed": 0, "device": "cpu", "threads": 1, "compile": compile_},
            }
        )
        return [r for r in read_metrics(train(cfg).run_dir / "metrics.jsonl") if "loss/sft" in r]

    eager, compiled = run(False), run(True)
    assert len(eager) == len(compiled) == 2
    assert "perf/compile_s" not in eager[0]
    assert compiled[0]["perf/compile_s"] > 0 and compiled[0]["perf/compiled_graphs"] >= 1
    for key in ("loss/sft", "grad_norm"):
        key = key if key in eager[0] else next(k for k in eager[0] if k.endswith(key))
        assert compiled[0][key] == pytest.approx(eager[0][key], rel=1e-5, abs=0), key
    assert compiled[1]["loss/sft"] == pytest.approx(eager[1]["loss/sft"], rel=1e-4, abs=0)
    assert compiled[1]["loss/sft"] != eager[0]["loss/sft"]  # the update happened
