"""The critic-free family (GRPO, Dr. GRPO, DAPO switches, RLOO, REINFORCE++): each estimator
against its paper's definition written as loops, one trainer step against a hand-written step,
a learning signal on a toy reward, resume ≡ uninterrupted, dynamic sampling. Tiny models built in
code (the PPO tests' fixtures); each run takes seconds."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from helpers import build_config, target_fraction
from safetensors.torch import load_file
from test_ppo import naive_clip_and_adam, naive_policy_terms

from rlhfkit.algos import pg
from rlhfkit.algos.pg import PGConfig
from rlhfkit.engine.metrics import read_metrics

ESTIMATORS = ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]


def make_cfg(assets: dict[str, str], out_dir: Path, **overrides) -> PGConfig:
    data = dict(
        out_dir=str(out_dir),
        policy={"name_or_path": assets["policy"]},
        data={"train": assets["prompts"], "prompt_template": "raw"},
        rollout={"max_new_tokens": 6, "temperature": 1.0},
        iterations=2,
        rollout_batch_size=4,
        group_size=4,
        mini_batch_size=16,
        sample_every=0,
        engine={"seed": 3, "threads": 1},
    )
    return build_config(PGConfig, data, **overrides)


# -- the estimators from their definitions -------------------------------------------------------


def naive_advantages(name, scores, kl_seq, kl_tok, lengths, g, beta, gamma):
    """Per reply, a list of per-token advantages, by loops over the papers' definitions."""
    n = len(scores)
    if name in ("grpo", "dr_grpo", "rloo"):
        r = [scores[i] - beta * kl_seq[i] for i in range(n)]  # KL in the reward (β = 0: none)
        out = []
        for i in range(n):
            group = [r[j] for j in range(n) if j // g == i // g]
            mean = sum(group) / g
            if name == "grpo":
                std = math.sqrt(sum((x - mean) ** 2 for x in group) / (g - 1))
                a = (r[i] - mean) / (std + 1e-4)
            elif name == "dr_grpo":
                a = r[i] - mean
            else:
                a = r[i] - (sum(group) - r[i]) / (g - 1)
            out.append([a] * lengths[i])
        return out
    s = list(scores)
    if name == "reinforce_pp_baseline":
        s = [s[i] - sum(scores[j] for j in range(n) if j // g == i // g) / g for i in range(n)]
    returns = []
    for i in range(n):
        rew = [-beta * kl_tok[i][t] for t in range(lengths[i])]
        rew[-1] += s[i]
        returns.append(
            [
                sum(gamma ** (k - t) * rew[k] for k in range(t, lengths[i]))
                for t in range(lengths[i])
            ]
        )
    flat = [x for row in returns for x in row]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)
    return [[(x - mean) / math.sqrt(var + 1e-8) for x in row] for row in returns]


@pytest.mark.parametrize("name", ESTIMATORS)
def test_each_estimator_equals_its_definition(assets, tmp_path, name):
    beta = 0.0 if name in ("grpo", "dr_grpo") else 0.07
    cfg = make_cfg(
        assets, tmp_path / name, advantage=name, kl_coef=beta, gamma=0.9,
        ref_policy=assets["ref"], track_kl=True,
    )  # fmt: skip
    run = pg.setup(cfg, reward_fn=target_fraction)
    batch, _, _ = pg.trainer.sample_groups(run)
    exp = batch.experience
    scores = torch.tensor(target_fraction([], batch.responses)) + torch.arange(16) * 1e-3
    adv = pg.advantages(cfg, exp, scores, beta)
    lengths = exp.response_mask.sum(1).tolist()
    kl_tok = [(exp.old_logprobs[i] - exp.ref_logprobs[i])[: lengths[i]].tolist() for i in range(16)]
    kl_seq = [sum(row) for row in kl_tok]
    expected = naive_advantages(name, scores.tolist(), kl_seq, kl_tok, lengths, 4, beta, 0.9)
    for i in range(16):
        torch.testing.assert_close(
            adv[i, : lengths[i]], torch.tensor(expected[i]), rtol=0, atol=2e-5
        )
        assert (adv[i, lengths[i] :] == 0).all()


# -- one trainer step against a hand-written one -------------------------------------------------


@pytest.mark.parametrize(
    "name, loss_mode, kl_loss_coef",
    [("grpo", "seq_mean_token_mean", 0.1), ("dr_grpo", "seq_mean_token_sum_norm", 0.0),
     ("rloo", "token_mean", 0.0), ("reinforce_pp", "token_mean", 0.0),
     ("reinforce_pp_baseline", "token_mean", 0.0)],
)  # fmt: skip
def test_one_step_equals_a_hand_written_step(assets, tmp_path, name, loss_mode, kl_loss_coef):
    lr, eps, max_norm = 1e-2, 1.0, 0.05
    overrides = dict(
        advantage=name, loss_mode=loss_mode, kl_loss_coef=kl_loss_coef, iterations=1,
        kl_coef=0.0 if name.endswith("grpo") else 0.05, ref_policy=assets["ref"],
        **{"optim.lr": lr, "optim.eps": eps, "optim.max_grad_norm": max_norm},
    )  # fmt: skip
    run = pg.setup(make_cfg(assets, tmp_path / "steps", **overrides), reward_fn=target_fraction)
    batch, _, _ = pg.trainer.sample_groups(run)
    exp = batch.experience
    policy0 = copy.deepcopy(run.models.policy)
    adv = pg.advantages(run.cfg, exp, exp.scores, run.cfg.kl_coef)
    result = pg.train(make_cfg(assets, tmp_path / "train", **overrides), reward_fn=target_fraction)

    # the loss from its definition: on-policy ratio exp(logπ − logπ_old) (= 1, but carries the
    # gradient), clipped surrogate, + β·k3 KL to the reference, reduced as the mode says
    from transformers import GPT2LMHeadModel

    ids, mask, p = exp.input_ids, exp.attention_mask, exp.prompt_len
    start = {k: v.detach().clone() for k, v in policy0.named_parameters()}

    ref_model = GPT2LMHeadModel.from_pretrained(assets["ref"]).eval()
    new_lp = naive_policy_terms(policy0, ids, mask, p, 1.0)
    with torch.no_grad():
        ref_lp = naive_policy_terms(ref_model, ids, mask, p, 1.0)
    rows = []
    for b in range(ids.shape[0]):
        terms = []
        for t in range(len(new_lp[b])):
            a = float(adv[b, t])
            ratio = torch.exp(new_lp[b][t] - float(exp.old_logprobs[b, t]))
            term = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
            if kl_loss_coef:
                d = float(ref_lp[b][t]) - new_lp[b][t]
                term = term + kl_loss_coef * (torch.exp(d) - d - 1)
            terms.append(term)
        rows.append(terms)
    n_seq = len(rows)
    if loss_mode == "seq_mean_token_mean":
        loss = sum(sum(r) / len(r) for r in rows) / n_seq
    elif loss_mode == "seq_mean_token_sum_norm":
        loss = sum(sum(r) for r in rows) / (n_seq * 6)
    else:
        loss = sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    loss.backward()
    grads = {k: q.grad for k, q in policy0.named_parameters()}
    expected = naive_clip_and_adam(policy0, grads, max_norm, lr, eps)
    saved = load_file(result.policy_path / "model.safetensors")
    moved = 0
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=2e-6, msg=key)
        moved += int(not torch.equal(saved[key], start[key]))
    assert moved == len(expected)


# -- learning signal, resume, dynamic sampling ---------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_reward_rises_on_a_toy_reward_while_kl_stays_bounded(assets, tmp_path, name):
    cfg = make_cfg(
        assets, tmp_path / name, advantage=name, iterations=30, rollout_batch_size=8,
        mini_batch_size=32, kl_coef=0.0 if name == "grpo" else 0.02, track_kl=True,
        **{"optim.lr": 3e-3},
    )  # fmt: skip
    pg.train(cfg, reward_fn=target_fraction)
    rows = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if "loss/policy" in r]
    first = sum(r["reward/score_mean"] for r in rows[:5]) / 5
    last = sum(r["reward/score_mean"] for r in rows[-5:]) / 5
    assert last > first + 0.15, (first, last)
    assert max(r["policy/kl_to_ref"] for r in rows) < 25.0


@pytest.mark.parametrize(
    "extra",
    [{"advantage": "rloo", "kl_coef": 0.05}, {"advantage": "grpo", "kl_loss_coef": 0.1,
     "ref_policy": "REF"}, {"advantage": "reinforce_pp_baseline", "kl_coef": 0.05,
     "dynamic_sampling": True}],
)  # fmt: skip
def test_resume_after_a_stop_equals_an_uninterrupted_run(assets, tmp_path, extra):
    extra = {k: assets["ref"] if v == "REF" else v for k, v in extra.items()}
    base = dict(iterations=4, ppo_epochs=2, mini_batch_size=8, **extra)
    full = pg.train(make_cfg(assets, tmp_path / "full", **base), reward_fn=target_fraction)
    stopped = make_cfg(assets, tmp_path / "resumed", stop_after=2, **base)
    assert pg.train(stopped, reward_fn=target_fraction).status == "stopped"
    resumed = pg.train(make_cfg(assets, tmp_path / "resumed", **base), reward_fn=target_fraction)
    a = load_file(full.policy_path / "model.safetensors")
    b = load_file(resumed.policy_path / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_dynamic_sampling_drops_uninformative_groups_and_overlong_shaping(assets, tmp_path):
    def sparse(prompts, responses):  # most groups score all-equal zero
        return [float(r.split()[:1] == ["w7"]) for r in responses]

    cfg = make_cfg(
        assets, tmp_path / "dapo", dynamic_sampling=True, max_sampling_rounds=3,
        clip_eps_high=0.28, loss_mode="token_mean", overlong_cache=2, iterations=3,
    )  # fmt: skip
    pg.train(cfg, reward_fn=sparse)
    rows = [r for r in read_metrics(Path(cfg.out_dir) / "metrics.jsonl") if "sampling/rounds" in r]
    assert all(0.0 < r["sampling/dropped_group_fraction"] <= 1.0 for r in rows)
    assert all(r["sampling/rounds"] >= 2 for r in rows)  # a full informative batch needs more
    assert all("policy/clipfrac_high" in r and "policy/clipfrac_low" in r for r in rows)


def test_commands_pick_their_estimator(tmp_path):
    from rlhfkit.cli import COMMAND_DEFAULTS
    from rlhfkit.config import load_config

    for command, advantage in (("grpo", "grpo"), ("rloo", "rloo"), ("reinforce", "reinforce_pp")):
        cfg = load_config(PGConfig, defaults=COMMAND_DEFAULTS[command])
        assert cfg.advantage == advantage
    # a preset or file still wins over the command's starting values
    cfg = load_config(PGConfig, preset="dr_grpo_sim", defaults=COMMAND_DEFAULTS["grpo"])
    assert cfg.advantage == "dr_grpo" and cfg.loss_mode == "seq_mean_token_sum_norm"
    with pytest.raises(ValueError, match="group_size >= 2"):
        PGConfig(advantage="grpo", group_size=1)


@pytest.mark.parametrize("command", ["ppo", "grpo", "rloo", "reinforce"])
def test_too_few_or_no_prompts_fail_in_one_line_before_any_run_directory(
    assets,
    tmp_path,
    command,
):
    from typer.testing import CliRunner

    from rlhfkit.cli import app

    empty, one = tmp_path / "empty.jsonl", tmp_path / "one.jsonl"
    empty.write_text("")
    one.write_text('{"prompt": "w1 w2"}\n')
    for path, message in ((empty, "no prompts"), (one, "but the file holds 1")):
        out = tmp_path / f"run_{path.stem}"
        result = CliRunner().invoke(
            app,
            [command, f"policy.name_or_path={assets['policy']}", f"data.train={path}",
             "reward_fn=rlhfkit.sim.rewards:gold", f"out_dir={out}", "data.prompt_template=raw"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert message in result.output and path.name in result.output
        assert "Traceback" not in result.output
        assert not out.exists()


def test_training_rollouts_and_the_evaluation_sample_the_same_replies(assets):
    """One path: the trainers' `collect` and the evaluation's `sample_batches` give the same ids
    and the same reply text for the same prompts and generator state."""
    from rlhfkit.data import read_prompts
    from rlhfkit.models import ModelConfig, load_policy, load_tokenizer
    from rlhfkit.rollout import (
        CallableScorer,
        OnlineModels,
        Reward,
        RolloutConfig,
        collect,
        prompt_source,
        sample_batches,
    )

    tok = load_tokenizer(assets["policy"])
    policy = load_policy(ModelConfig(name_or_path=assets["policy"])).eval()
    records = read_prompts(assets["prompts"]).records[:12]
    cfg = RolloutConfig(max_new_tokens=6, batch_size=12)
    source = prompt_source(records, tok, 64, "raw")
    reward = Reward([("len", CallableScorer(lambda p, r: [len(x) for x in r]), 1.0)])
    models = OnlineModels(policy, tok, reward, use_ref=False)
    batch = collect(models, source, list(range(12)), torch.Generator().manual_seed(5), cfg)
    ((_, rollout, texts),) = list(
        sample_batches(policy, tok, records, cfg, torch.Generator().manual_seed(5), 64, "raw")
    )
    assert batch.responses == texts
    assert batch.prompts == source.texts
    width = batch.experience.response_ids.shape[1]
    assert torch.equal(batch.experience.response_ids, rollout.response_ids[:, :width])
    assert any(texts) and all(t == t.strip() for t in texts)


def test_nan_scores_skip_the_batch_or_stop_with_the_last_good_checkpoint(assets, tmp_path):
    calls = {"n": 0}

    def nan_on_second_call(prompts, responses):
        calls["n"] += 1
        scores = target_fraction(prompts, responses)
        return [float("nan")] * len(scores) if calls["n"] == 2 else scores

    result = pg.train(
        make_cfg(assets, tmp_path / "skip", iterations=3), reward_fn=nan_on_second_call
    )
    assert result.status == "completed" and result.iterations_done == 3
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r.get("nan/skipped_batches") == 1] == [2]
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))

    calls["n"] = 0
    cfg = make_cfg(
        assets, tmp_path / "stop", iterations=3, on_nan="stop", **{"engine.checkpoint_every": 1}
    )
    result = pg.train(cfg, reward_fn=nan_on_second_call)
    assert result.status == "stopped_on_nan" and result.iterations_done == 1
    assert (result.run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    assert not result.policy_path.exists()


@pytest.mark.slow  # compiles a GPT-2 block forward + backward: minutes on a CPU
def test_one_iteration_compiled_equals_eager(assets, tmp_path, monkeypatch):
    """One GRPO iteration of two optimiser steps (mini-batches of 8 of its 16 replies), compiled
    against eager: generation stays eager, so both sample the same replies; the loss (absolute
    1e-6) and gradient norm (relative 1e-4; the second step after an update) are equal within
    float32 reordering. The groups' shared-prompt forward is turned off on both sides: its block
    calls carry a KV cache and run eager, so with it on nothing would be compiled."""
    import importlib

    forward = importlib.import_module("rlhfkit.rollout.forward")
    monkeypatch.setattr(forward, "can_share_prompts", lambda body: False)

    def run(compile_: bool) -> dict:
        cfg = make_cfg(
            assets, tmp_path / f"compiled{compile_}", iterations=1, mini_batch_size=8,
            engine={"seed": 3, "threads": 1, "compile": compile_},
        )  # fmt: skip
        pg.train(cfg, reward_fn=target_fraction)
        rows = read_metrics(Path(cfg.out_dir) / "metrics.jsonl")
        return next(r for r in rows if "loss/policy" in r)

    eager, compiled = run(False), run(True)
    assert compiled["perf/compile_s"] > 0 and "perf/compile_s" not in eager
    assert compiled["perf/compiled_graphs"] >= 2  # the platform probe and the block
    assert compiled["response/length_mean"] == eager["response/length_mean"]
    # the loss is a mean of advantage-weighted ratios near 0 (advantages sum to 0 per group):
    # compared absolutely, at float32 reordering of terms of size ~1; the norm relatively
    assert compiled["loss/policy"] == pytest.approx(eager["loss/policy"], rel=0, abs=1e-6)
    assert compiled["policy/grad_norm"] == pytest.approx(eager["policy/grad_norm"], rel=1e-4)
