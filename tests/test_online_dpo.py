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
from rlhfkit.rollout.llm_judge import render_dialogue
from rlhfkit.types import user
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


# --- labelled by a pairwise (LLM) judge, asked in both orders -------------------------------


def _by_length(prompt, a, b):
    """A consistent judge: the longer reply is better, equal lengths a tie."""
    return 0.5 if len(a) == len(b) else float(len(a) > len(b))


def test_judge_pairs_k3_is_the_round_robin_best_vs_worst():
    """K = 3, naive from the rule: w_i = Σ_j o_ij (an order-dependent judgment counts ½), the
    highest vs the lowest w. Prompt "p" by length: w = (0, 2, 1) → rows 1 vs 0. Prompt "q": a
    judge that always names the first reply, all three judgments inconsistent → no pair."""
    from rlhfkit.algos.online_dpo.label import judge_pairs

    def judge(prompt, a, b):
        return 1.0 if prompt == "q" else _by_length(prompt, a, b)

    replies = ["x", "xxx", "xx", "y", "yy", "yyy"]
    judged = judge_pairs(judge, ["p"] * 3 + ["q"] * 3, replies, 3)
    assert judged.scores.tolist() == [0.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert judged.chosen.tolist() == [1] and judged.rejected.tolist() == [0]
    assert (judged.ties, judged.order_disagreements, judged.judge_ties) == (1, 3, 0)
    assert judged.judgments == 6
    # soft verdicts: o = ½·(0.8 + 1 − 0.4) = 0.7 for the first-listed reply of each judgment
    soft = judge_pairs(lambda p, a, b: 0.8 if a < b else 0.4, ["p"] * 3, ["a", "b", "c"], 3)
    assert soft.scores.tolist() == pytest.approx([1.4, 1.0, 0.6])
    assert (soft.chosen.tolist(), soft.rejected.tolist()) == ([0], [2])


def _judge_world(assets, tmp_path):
    """A tiny causal LM judge with its own byte-level tokenizer, saved as a folder, and a
    short template (the default one is longer than the tiny model's context). Its weight
    matrices are scaled ×20 so that its verdicts depend on the replies: at the usual random
    init every verdict is ≈ one constant, the same position wins in both orders, and every
    pair would be dropped as order-dependent (measured: 16 of 16 probe pairs at seeds 0–2)."""
    from rlhfkit.models.tiny import build_tiny_model, save_tiny_model
    from rlhfkit.sim.tokenizer import train_tokenizer

    tok = train_tokenizer([" ".join(f"w{i}" for i in range(14)) + " A B |"] * 20,
                          vocab_size=300, min_frequency=1)  # fmt: skip
    model = build_tiny_model("gpt2", "nano", tokenizer=tok, seed=0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.mul_(20.0)
    folder = save_tiny_model(model, tmp_path / "judge", tok)
    template = tmp_path / "judge.txt"
    template.write_text("# a short judge prompt\n{prompt}|{reply_a}|{reply_b}|\n")
    return str(folder), str(template)


def test_one_iteration_labelled_by_a_local_lm_judge(assets, tmp_path, monkeypatch):  # noqa: F811
    """`label: judge` with a tiny local LM judge and no reward: one iteration trains on the
    pairs the judge ordered. Every kept pair is checked against the judge asked directly
    (`LocalLMJudge`, both orders, the order-averaged outcome > ½ for the chosen reply), the
    counts add up, and the scores are 0 (there is no reward)."""
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout.llm_judge import LocalLMJudge, load_template

    folder, template = _judge_world(assets, tmp_path)
    captured = []
    real = trainer_module.pair_items
    monkeypatch.setattr(
        trainer_module, "pair_items", lambda *a: captured.append(real(*a)) or captured[-1]
    )
    cfg = make_cfg(assets, tmp_path / "judged", iterations=1, label="judge",
                   judge={"model": folder, "template": template})  # fmt: skip
    result = train(cfg)
    assert result.status == "completed"
    m = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "pairs/kept" in r][0]
    print(f"tiny LM judge: {m['pairs/kept']} of 8 pairs kept, "
          f"{m['label/order_disagreement']} order-dependent, {m['label/judge_ties']} ties")  # fmt: skip
    assert m["label/judgments"] == 8
    assert m["pairs/kept"] + m["pairs/ties_dropped"] == 8
    assert m["pairs/ties_dropped"] == m["label/judge_ties"] + m["label/order_disagreement"]
    assert m["reward/score_mean"] == 0.0 and m["reward/score_std"] == 0.0
    (items,) = captured
    assert len(items) == m["pairs/kept"] >= 1 and "loss/dpo" in m
    judge = LocalLMJudge(load_policy(ModelConfig(name_or_path=folder)), load_tokenizer(folder),
                         load_template(template))  # fmt: skip
    tok = AutoTokenizer.from_pretrained(assets["policy"])
    for it in items:
        prompt = tok.decode(it.chosen_ids[: it.prompt_length], skip_special_tokens=True)
        good = tok.decode(it.chosen_ids[it.prompt_length :], skip_special_tokens=True)
        bad = tok.decode(it.rejected_ids[it.prompt_length :], skip_special_tokens=True)
        p_ab, p_ba = judge(user(prompt), good, bad), judge(user(prompt), bad, good)
        assert 0.5 * (p_ab + 1 - p_ba) > 0.5, (prompt, good, bad, p_ab, p_ba)
        assert (p_ab > 0.5) == (p_ba < 0.5)  # consistent across orders


def test_the_judge_is_asked_in_both_orders_and_an_order_dependent_pair_is_dropped(
    assets,  # noqa: F811
    tmp_path,
):
    """A scripted judge: for prompts whose first word is w2..w6 it names whatever reply is
    shown first (its verdict flips with the order), for the others it prefers the longer reply.
    Every pair is asked as (a, b) and as (b, a); the flipping prompts' pairs are dropped and
    counted as `label/order_disagreement`; the kept pairs are ordered by length. A reward
    model is still configured (`reward_fn`): its scores are logged, but it does not label."""
    calls = []
    flips = {f"w{i}" for i in range(2, 7)}

    def judge(prompt, a, b):
        text = render_dialogue(prompt)
        calls.append((text, a, b))
        return 1.0 if text.split()[0] in flips else _by_length(prompt, a, b)

    captured = []
    real = trainer_module.pair_items
    cfg = make_cfg(assets, tmp_path / "scripted", iterations=1, label="judge",
                   judge={"model": "unused"}, rollout_batch_size=16, mini_batch_size=16)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            trainer_module, "pair_items", lambda *a: captured.append(real(*a)) or captured[-1]
        )
        result = train(cfg, reward_fn=target_fraction, pair_judge=judge)
    asked = {(p, a, b) for p, a, b in calls}
    assert len(calls) == 32 and all((p, b, a) in asked for p, a, b in calls)
    flipping = {p for p, _, _ in calls if p.split()[0] in flips}
    same_length = {p for p, a, b in calls if len(a) == len(b) and p not in flipping}
    m = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "pairs/kept" in r][0]
    assert 0 < len(flipping) < 16
    assert m["label/order_disagreement"] == len(flipping)
    assert m["label/judge_ties"] == len(same_length)
    assert m["pairs/kept"] == 16 - len(flipping) - len(same_length)
    assert "reward/score_chosen" in m  # the reward still scores and is logged
    tok = AutoTokenizer.from_pretrained(assets["policy"])
    (items,) = captured
    for it in items:
        prompt = tok.decode(it.chosen_ids[: it.prompt_length], skip_special_tokens=True)
        good = tok.decode(it.chosen_ids[it.prompt_length :], skip_special_tokens=True)
        bad = tok.decode(it.rejected_ids[it.prompt_length :], skip_special_tokens=True)
        assert prompt.split()[0] not in flips and len(good) > len(bad)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["label=judge"], "label=judge needs judge.model"),
        (["judge.model=POLICY"], "but label=reward: add label=judge"),
        (["label=judge", "judge.model=/no/such/judge"], "judge.model"),
        (["label=judge", "judge.url=http://127.0.0.1:9/v1"], "judge `url` needs `api_model`"),
        (["label=judge", "judge.model=POLICY", "judge.template=/no/such.txt"], "judge.template"),
    ],
)
def test_a_bad_judge_config_is_one_line_before_the_run_directory(
    assets,  # noqa: F811
    tmp_path,
    overrides,
    message,
):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    out = tmp_path / "run"
    args = [
        "online-dpo", f"policy.name_or_path={assets['policy']}", f"data.train={assets['prompts']}",
        "reward_fn=helpers:target_fraction", f"out_dir={out}", "engine.threads=1",
        *(o.replace("POLICY", assets["policy"]) for o in overrides),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()
