"""Online / iterative DPO: labelling (best vs worst, ties dropped), one online step equal to an
offline DPO step on the same sampled pairs, ties counted, the iterative variant's step count,
a learning signal on a toy reward, resume ≡ uninterrupted, LoRA (reference = adapters off),
presets. Tiny models built in code (the PPO tests' fixtures); each run takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import build_config, target_fraction
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2LMHeadModel

import rlhfkit.algos.online_dpo.trainer as trainer_module
from rlhfkit.algos.dpo import LOSSES, DPOConfig
from rlhfkit.algos.dpo.trainer import micro_batch_loss as offline_micro_batch_loss
from rlhfkit.algos.online_dpo import OnlineDPOConfig, label_pairs, train
from rlhfkit.config import load_config
from rlhfkit.engine.metrics import read_metrics
from rlhfkit.update.pairs import collate
from rlhfkit.update.reference import reference_logps


def make_cfg(assets: dict[str, str], out_dir: Path, **overrides) -> OnlineDPOConfig:
    """The PPO tests' word-level world (`assets`, tests/conftest.py) with online DPO settings."""
    data = dict(
        out_dir=str(out_dir),
        policy={"name_or_path": assets["policy"]},
        data={"train": assets["prompts"], "prompt_template": "raw"},
        rollout={"max_new_tokens": 6, "temperature": 1.0},
        iterations=2,
        rollout_batch_size=8,
        mini_batch_size=8,
        sample_every=0,
        engine={"seed": 3, "threads": 1},
    )
    return build_config(OnlineDPOConfig, data, **overrides)


def test_label_pairs_take_the_best_and_the_worst_and_drop_ties():
    scores = torch.tensor([0.2, 0.7, 0.5, 0.5, 0.9, 0.1])  # K = 2: prompts 0, 1 (tie), 2
    chosen, rejected, ties = label_pairs(scores, 2)
    assert chosen.tolist() == [1, 4] and rejected.tolist() == [0, 5] and ties == 1
    scores = torch.tensor([0.3, 0.9, 0.1, 0.4, 0.4, 0.4])  # K = 3
    chosen, rejected, ties = label_pairs(scores, 3)
    assert chosen.tolist() == [1] and rejected.tolist() == [2] and ties == 1


def test_one_online_step_equals_an_offline_dpo_step_on_the_same_pairs(
    assets,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """One iteration, one mini-batch of every kept pair, a reference far from the policy: the
    saved policy equals the base policy after one step of the *offline* DPO trainer's loss
    (`algos.dpo.trainer.micro_batch_loss`, cached reference log-probs) on the pairs the online
    run sampled and labelled, with the same AdamW (eps = 1: the update scales with the
    gradient)."""
    captured = []
    real = trainer_module.pair_items
    monkeypatch.setattr(
        trainer_module, "pair_items", lambda *a: captured.append(real(*a)) or captured[-1]
    )
    lr, beta = 1e-2, 0.3
    cfg = make_cfg(
        assets, tmp_path / "online", iterations=1, beta=beta, ref_policy=assets["ref"],
        optim={"lr": lr, "max_grad_norm": None, "eps": 1.0},
    )  # fmt: skip
    result = train(cfg, reward_fn=target_fraction)
    (items,) = captured
    assert 4 <= len(items) <= 8  # 8 prompts, a few ties dropped
    tok = AutoTokenizer.from_pretrained(assets["policy"])
    for it in items:  # the labels follow the reward of the sampled replies
        good = tok.decode(it.chosen_ids[it.prompt_length :], skip_special_tokens=True)
        bad = tok.decode(it.rejected_ids[it.prompt_length :], skip_special_tokens=True)
        assert target_fraction([], [good])[0] > target_fraction([], [bad])[0]

    dpo_cfg = DPOConfig.model_validate({"beta": beta, "data": {"max_tokens": 100_000}})
    model = GPT2LMHeadModel.from_pretrained(assets["policy"]).eval()
    ref_model = GPT2LMHeadModel.from_pretrained(assets["ref"]).eval()
    ref = reference_logps(ref_model, items, tok.pad_token_id, dpo_cfg.data)
    batch = collate(items, tok.pad_token_id, True)
    batch["index"] = torch.arange(len(items))
    loss, _ = offline_micro_batch_loss(
        model, batch, lambda b: ref[:, b["index"]], len(items), 1, LOSSES["sigmoid"], dpo_cfg
    )
    assert abs(loss.item() - 0.6931) > 0.05  # π ≠ π_ref: not at the midpoint log 2
    loss.backward()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1.0, weight_decay=0)
    opt.step()
    after = load_file(str(result.policy_path / "model.safetensors"))
    before = load_file(str(Path(assets["policy"]) / "model.safetensors"))
    moved = 0
    for name, p in model.named_parameters():
        if name in after:
            torch.testing.assert_close(after[name], p.detach(), atol=1e-7, rtol=1e-5)
            moved += not torch.equal(after[name], before[name])
    assert moved > 10
    m = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/dpo" in r][0]
    assert m["loss/dpo"] == pytest.approx(loss.item(), rel=1e-5)
    assert m["pairs/kept"] + m["pairs/ties_dropped"] == 8


def test_ties_are_dropped_and_counted(assets, tmp_path):  # noqa: F811
    cfg = make_cfg(assets, tmp_path / "ties", iterations=1)
    result = train(cfg, reward_fn=lambda prompts, responses: [1.0] * len(responses))
    m = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "pairs/kept" in r][0]
    assert (m["pairs/kept"], m["pairs/ties_dropped"]) == (0, 8) and "loss/dpo" not in m
    a = load_file(str(result.policy_path / "model.safetensors"))
    b = load_file(str(Path(assets["policy"]) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # nothing to learn from: unchanged


def test_iterative_variant_relabels_every_n_steps(assets, tmp_path, monkeypatch):  # noqa: F811
    """16 prompts labelled at once, mini-batches of 4 pairs, 2 epochs: up to 8 DPO steps on
    each labelled set before the next is sampled."""
    steps = []
    real = trainer_module.optimizer_step
    monkeypatch.setattr(trainer_module, "optimizer_step", lambda *a: steps.append(1) or real(*a))
    sampled = []
    real_label = trainer_module.label_pairs
    monkeypatch.setattr(
        trainer_module, "label_pairs", lambda *a: sampled.append(real_label(*a)) or sampled[-1]
    )
    cfg = make_cfg(assets, tmp_path / "iter", rollout_batch_size=16, mini_batch_size=4,
                   ppo_epochs=2, num_samples=4)  # fmt: skip
    train(cfg, reward_fn=target_fraction)
    per_set = [2 * -(-len(chosen) // 4) for chosen, _, _ in sampled]
    assert len(sampled) == 2 and sum(per_set) == len(steps) and min(per_set) >= 4


def test_reward_rises_under_online_dpo(assets, tmp_path):  # noqa: F811
    """The toy reward (share of the word w7 in the reply) from a random tiny policy: the mean
    rollout score of the last iterations is well above the first ones'."""
    cfg = make_cfg(assets, tmp_path / "learn", iterations=30, rollout_batch_size=8,
                   num_samples=4, mini_batch_size=8, optim={"lr": 3e-3}, beta=0.1)  # fmt: skip
    result = train(cfg, reward_fn=target_fraction)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "reward/score_mean" in r]
    first = sum(r["reward/score_mean"] for r in rows[:5]) / 5
    last = sum(r["reward/score_mean"] for r in rows[-5:]) / 5
    print(f"online DPO toy reward: first 5 iterations {first:.3f}, last 5 {last:.3f}")
    assert last > first + 0.15, (first, last)
    assert rows[-1]["rewards/accuracies"] > 0.5


def test_resume_after_a_stop_equals_an_uninterrupted_run(assets, tmp_path):  # noqa: F811
    base = dict(iterations=3, rollout_batch_size=8, mini_batch_size=4, ppo_epochs=2)
    full = train(make_cfg(assets, tmp_path / "full", **base), reward_fn=target_fraction)
    stopped = make_cfg(assets, tmp_path / "resumed", stop_after=2, **base)
    assert train(stopped, reward_fn=target_fraction).status == "stopped"
    resumed = train(make_cfg(assets, tmp_path / "resumed", **base), reward_fn=target_fraction)
    a = load_file(full.policy_path / "model.safetensors")
    b = load_file(resumed.policy_path / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lora_reference_is_the_policy_with_adapters_off(assets, tmp_path):  # noqa: F811
    """With LoRA (B = 0 at the start) the first step's implicit rewards are exactly 0: the
    reference is the policy itself with its adapters disabled; later ones move."""
    cfg = make_cfg(assets, tmp_path / "lora", iterations=3, optim={"lr": 5e-2},
                   **{"policy.lora": {"r": 4, "alpha": 8, "dropout": 0.0}})  # fmt: skip
    result = train(cfg, reward_fn=target_fraction)
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "loss/dpo" in r]
    assert rows[0]["rewards/chosen"] == 0.0 and rows[0]["rewards/rejected"] == 0.0
    assert rows[-1]["rewards/margins"] != 0.0


@pytest.mark.parametrize("preset", ["online_dpo_sim", "iterative_dpo_sim"])
def test_presets_validate(preset):
    cfg = load_config(OnlineDPOConfig, preset=preset)
    assert cfg.policy.name_or_path and cfg.data.train and cfg.reward_model
