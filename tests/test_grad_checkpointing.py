"""`model.gradient_checkpointing: true` is really on in every trainer, and changes nothing else.

For SFT, the RM (dropout on and `disable_dropout`), PPO (policy and critic), GRPO and DPO: a
short run with checkpointing recomputes every decoder-layer forward that had gradients on, once,
in the backward pass (counted with module hooks, `checkpointing_helpers`), a run without it
recomputes none, and both end at the same weights. PPO, GRPO, DPO and the RM with
`disable_dropout` train in eval mode, where transformers alone never checkpoints.

Tolerance of the weights: checkpointing repeats the same float32 ops, but gradients may reach
shared leaves (the tied embeddings) in another order, so they can differ by float32 summation
rounding (≈ 1e-5 relative in `test_models_scalar`); the weights after three Adam steps must agree
within 1e-5 absolute, about 0.1 % of what the steps moved them (lr 3e-3). Measured on this host:
bitwise equal in every run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpointing_helpers import Recomputes, count_recomputes
from helpers import build_config, target_fraction
from safetensors.torch import load_file
from test_online_dpo import make_cfg as make_online_dpo_cfg
from test_pg import make_cfg as make_pg_cfg
from test_ppo import make_cfg

import rlhfkit.algos.ppo.trainer as ppo_trainer
from rlhfkit.algos import pg
from rlhfkit.algos.dpo import DPOConfig
from rlhfkit.algos.dpo import train as train_dpo
from rlhfkit.algos.kto import KTOConfig
from rlhfkit.algos.kto import train as train_kto
from rlhfkit.algos.online_dpo import train as train_online_dpo
from rlhfkit.algos.ppo import train as train_ppo
from rlhfkit.algos.rm import RMConfig
from rlhfkit.algos.rm import train as train_rm
from rlhfkit.algos.sft import SFTConfig
from rlhfkit.algos.sft import train as train_sft
from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
from rlhfkit.sim.tokenizer import train_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "fish", "bird", "moon", "star"]
ATOL = 1e-5  # see the module docstring


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Path:
    """Demonstrations and preference pairs, and tiny GPT-2 / Llama models with dropout 0.1 (so
    that "dropout off" and "the same dropout masks when recomputed" are both exercised)."""
    root = tmp_path_factory.mktemp("ckpt")
    pairs, demos = [], []
    for i, w in enumerate(WORDS * 3):
        pairs.append({"prompt": f"is it a {w}?", "chosen": f"it is a {w}, yes.", "rejected": "no."})
        demos.append({"prompt": f"say {w} twice", "response": f"{w} {w}." if i % 2 else "ok."})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    rated = [{"prompt": r["prompt"], "completion": r[side], "label": side == "chosen"}
             for r in pairs for side in ("chosen", "rejected")]  # fmt: skip
    (root / "rated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rated))
    (root / "demos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in demos))
    texts = [" ".join(r.values()) for r in pairs + demos]
    tok = train_tokenizer(texts * 5, vocab_size=300, min_frequency=1)
    for arch in ("gpt2", "llama"):
        model = build_tiny_model(arch, "nano", tokenizer=tok, seed=0)
        if arch == "gpt2":
            model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.1
        else:
            model.config.attention_dropout = 0.1
        save_tiny_model(model, root / arch, tok)
    return root


def _offline_cfg(cls, root: Path, arch: str, out: str, data: str, ckpt: bool, **kw):
    defaults = {
        "out_dir": str(root / out),
        "model": {"name_or_path": str(root / arch), "gradient_checkpointing": ckpt},
        "data": {"train": str(root / data), "max_length": 32, "max_tokens": 160},
        "optim": {"lr": 3e-3, "max_grad_norm": 1.0},
        "max_steps": 3,
        "log_every": 1,
        "engine": {"seed": 0, "device": "cpu", "threads": 1},
    }
    return build_config(cls, defaults, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=ATOL, rtol=0)


def _assert_checkpointing(off: Recomputes, on: Recomputes) -> None:
    """Off: no layer recomputed. On: each layer forward with gradients on recomputed once."""
    assert off.layer_calls > 0 and off.recomputed == 0
    assert on.layer_calls == off.layer_calls  # the same training forwards
    assert on.recomputed == on.layer_calls


def _both(run) -> tuple[tuple[Recomputes, object], tuple[Recomputes, object]]:
    results = []
    for ckpt in (False, True):
        with count_recomputes() as count:
            out = run(ckpt)
        results.append((count, out))
    return results[0], results[1]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sft(offline, arch):
    def run(ckpt):
        cfg = _offline_cfg(SFTConfig, offline, arch, f"sft_{arch}_{ckpt}", "demos.jsonl", ckpt)
        return _weights(train_sft(cfg).model_dir)

    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)


@pytest.mark.parametrize("disable_dropout", [True, False])
def test_reward_model(offline, disable_dropout):
    def run(ckpt):
        out = f"rm_{disable_dropout}_{ckpt}"
        cfg = _offline_cfg(
            RMConfig, offline, "gpt2", out, "pairs.jsonl", ckpt, disable_dropout=disable_dropout
        )
        return _weights(train_rm(cfg).model_dir)

    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)


def test_dpo(offline):
    def run(ckpt):
        cfg = _offline_cfg(DPOConfig, offline, "gpt2", f"dpo_{ckpt}", "pairs.jsonl", ckpt)
        return _weights(train_dpo(cfg).model_dir)

    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)


def test_kto(offline):
    """The z₀ pass runs without gradients (not recomputed, not counted); the loss pass is."""

    def run(ckpt):
        cfg = _offline_cfg(KTOConfig, offline, "gpt2", f"kto_{ckpt}", "rated.jsonl", ckpt)
        return _weights(train_kto(cfg).model_dir)

    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)


def test_ppo_policy_and_critic(assets, tmp_path, monkeypatch):
    """Both trained models checkpoint (the critic inherits the policy's setting when it has no
    config of its own), counted per model."""
    critic_counts: list[Recomputes] = []
    load_critic = ppo_trainer.load_critic

    def counted_critic(cfg):
        critic_counts.append(Recomputes())
        return critic_counts[-1].attach(load_critic(cfg))

    monkeypatch.setattr(ppo_trainer, "load_critic", counted_critic)

    def run(ckpt):
        cfg = make_cfg(
            assets,
            tmp_path / f"ppo_{ckpt}",
            iterations=1,
            **{"policy.gradient_checkpointing": ckpt},
        )
        result = train_ppo(cfg, reward_fn=target_fraction)
        return _weights(result.policy_path), _weights(result.run_dir / "critic")

    (off, (p_off, c_off)), (on, (p_on, c_on)) = _both(run)
    _assert_checkpointing(off, on)
    critic_off, critic_on = critic_counts
    _assert_checkpointing(critic_off, critic_on)
    assert on.layer_calls > critic_on.layer_calls  # the policy's layers counted as well
    _assert_same_weights(p_off, p_on)
    _assert_same_weights(c_off, c_on)


def test_grpo(assets, tmp_path, monkeypatch):
    """Without checkpointing, GRPO's groups take the shared-prompt forward (each prompt once,
    `rollout.forward` point 6), which checkpointing turns off: the counts compare the full
    forward on both sides, and the shared-prompt run must end at the same weights too."""
    import importlib

    def run(ckpt, tag=""):
        cfg = make_pg_cfg(
            assets,
            tmp_path / f"grpo_{ckpt}{tag}",
            iterations=1,
            **{"policy.gradient_checkpointing": ckpt},
        )
        return _weights(pg.train(cfg, reward_fn=target_fraction).policy_path)

    w_shared = run(False, "_shared")
    forward = importlib.import_module("rlhfkit.rollout.forward")
    monkeypatch.setattr(forward, "shared_prompt_hidden", lambda *args: None)
    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)
    _assert_same_weights(w_shared, w_on)


def test_online_dpo(assets, tmp_path):
    """The reference runs without gradients (not counted); the DPO step's forward is."""

    def run(ckpt):
        cfg = make_online_dpo_cfg(
            assets, tmp_path / f"odpo_{ckpt}", iterations=1,
            **{"policy.gradient_checkpointing": ckpt},
        )  # fmt: skip
        return _weights(train_online_dpo(cfg, reward_fn=target_fraction).policy_path)

    (off, w_off), (on, w_on) = _both(run)
    _assert_checkpointing(off, on)
    _assert_same_weights(w_off, w_on)
